"""What to tell people when something goes wrong: one message per error reason, in Chinese and English.

Every error of the platform has one shape, ``{code, status, message, errors}``, and ``errors.reason``
is a stable machine-readable code (``insufficient_fund``, ``rate_limited``, ...). The code that
refuses writes an English text for developers; this module holds the words shown to people — residents,
grid workers, community staff — for each reason, in simplified Chinese (``zh-CN``, the default)
and English (``en``).

It is the one catalogue: the services and the gateway (every error answer, through
:func:`services.kernel.web.error_body`), the web client (``web/``, which imports only
:mod:`cocreate_client`) and the command line all read it, so a reason reads the same everywhere.
It is standard library only and has no state.

The language of an error answer is the one of the request's ``Accept-Language``
(:func:`match_locale`: ``zh-CN`` when the header is absent or names none of ours; the gateway
passes the caller's header on to the services, or ``zh-CN`` when there is none). In ``zh-CN`` the
answer's ``message`` is this catalogue's Chinese for ``errors.reason`` (else for the status code),
the developer's English text moves to ``errors.detail``, and the field-level messages
(``errors.json``, ``errors.query``, ...) are translated by :func:`field_errors`; in ``en`` the
answer is the developer's English as it was written.

    from cocreate_client.messages import message, message_for_error, message_for_status
    message("insufficient_fund")               # "社区基金余额不足"
    message("insufficient_fund", "en-GB")      # "The community fund does not have enough money"
    message_for_status(429, "zh")              # "操作太频繁，请稍后再试"
    message_for_error(api_error.body, "zh-CN")  # by errors.reason, else by the status code
    field_message("Not a valid integer.")     # "应为整数" (a field-level message; see FIELD_MESSAGES)

Adding a reason: when code raises a new reason (``raise Conflict(..., reason="new_reason")``, a
``reason = "..."`` on a :class:`DomainError` subclass, or ``{"reason": "..."}`` passed to
``error_response``), add a line ``"new_reason": ("中文", "English"),`` to ``_CATALOGUE`` below, in
its section. Write for a resident: short, plain, no codes, field names, amounts in fen or stack
traces; say what happened and, when there is one, what to do next. ``tests/unit/test_messages.py``
reads the services' and the gateway's source and fails while any reason raised there has no entry
here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["DEFAULT_LOCALE", "FIELD_MESSAGES", "GENERIC", "LOCALES", "MESSAGES", "STATUS_REASONS", "field_errors",
           "field_message", "match_locale", "message", "message_for_error", "message_for_status"]

LOCALES = ("zh-CN", "en")
DEFAULT_LOCALE = "zh-CN"

# reason -> (zh-CN, en)
_CATALOGUE: dict[str, tuple[str, str]] = {
    # -- the request itself (HTTP level) ---------------------------------------------------------
    "bad_request": ("请求有误，请检查后再试", "The request could not be understood; please check it and try again"),
    "validation_failed": ("填写的内容有误，请检查后再提交", "Some of the details are not right; please check them and try again"),
    "body_too_large": ("提交的内容太多了", "What you sent is too large"),
    "url_too_long": ("网址太长了", "The web address is too long"),
    "unsupported_media_type": ("提交的内容格式不对", "What you sent is not in a format we accept"),
    "method_not_allowed": ("这里不能进行这种操作", "This cannot be done here"),
    "not_found": ("没有找到相关内容", "Nothing was found"),
    "rate_limited": ("操作太频繁，请稍后再试", "Too many requests; please wait a moment and try again"),
    "internal_error": ("系统出了点问题，请稍后再试", "Something went wrong on our side; please try again later"),
    "bad_gateway": ("服务出了点问题，请稍后再试", "A service ran into a problem; please try again later"),
    "service_unavailable": ("服务暂时不可用，请稍后再试", "The service is temporarily unavailable; please try again later"),
    "timeout": ("等待时间太长，请稍后再试", "This took too long; please try again later"),
    "outcome_unknown": ("服务响应太慢，不确定是否已办成，请先查看结果再决定是否重试",
                        "The service answered too slowly, so it may or may not have gone through; "
                        "check before trying again"),
    "catalogue_incomplete": ("系统正在启动，请稍后再试", "The system is still starting up; please try again shortly"),

    # -- signing in, roles and communities ------------------------------------------------------
    "unauthenticated": ("请先登录", "Please sign in first"),
    "token_expired": ("登录已过期，请重新登录", "Your sign-in has expired; please sign in again"),
    "token_invalid": ("登录信息无效，请重新登录", "Your sign-in is not valid; please sign in again"),
    "no_caller": ("无法确认是谁在操作，请重新登录", "We could not tell who is doing this; please sign in again"),
    "no_users_file": ("暂时无法登录，请联系管理员", "Signing in is not available yet; please contact the administrator"),
    "forbidden": ("您没有权限进行此操作", "You are not allowed to do this"),
    "role_required": ("您的身份不能进行此操作", "Your role does not allow this"),
    "community_required": ("需要用社区的账号才能进行此操作", "This needs an account of a community"),
    "other_community": ("这是其他社区的事务，您无法操作", "This belongs to another community"),
    "not_your_community": ("只能查看您所在社区的动态", "You can follow only your own community"),
    "ticket_invalid": ("实时动态的连接已失效，请刷新页面", "The live updates link is no longer valid; please reload the page"),
    "too_many_streams": ("您同时打开的实时动态页面太多，请关闭一些后再试",
                         "You have too many live pages open at once; close some and try again"),
    "live_streams_full": ("实时动态连接已满，请稍后再试", "Live updates are full right now; please try again shortly"),

    # -- versions, repeats and the rules in general ----------------------------------------------
    "conflict": ("当前情况下无法进行此操作", "This cannot be done as things stand"),
    "concurrency_conflict": ("内容刚被别人修改过，请刷新后再试", "Someone else changed this just now; please reload and try again"),
    "version_conflict": ("内容已经更新，请刷新后再试", "This has been updated since you opened it; please reload and try again"),
    "precondition_failed": ("内容已经更新，请刷新页面后再操作", "This changed since you loaded it; please reload the page first"),
    "invalid_if_match": ("页面信息已过时，请刷新后再试", "The page is out of date; please reload and try again"),
    "invalid_idempotency_key": ("提交信息有误，请刷新后重新提交", "The submission could not be checked; please reload and submit again"),
    "idempotency_key_reused": ("这次提交和之前的一次冲突，请刷新后重新提交",
                               "This submission clashes with an earlier one; please reload and submit again"),
    "idempotency_in_progress": ("上一次提交还在处理中，请稍候", "Your previous submission is still being processed; please wait"),
    "domain_rule": ("不符合相关规定，无法办理", "The rules do not allow this"),
    "already_exists": ("已经存在了，不用重复创建", "This already exists"),
    "already_registered": ("已经登记过了", "This is already registered"),
    "no_change": ("内容没有变化", "Nothing has changed"),
    "reason_required": ("请说明原因", "Please give a reason"),
    "invalid_period": ("时间段填写有误", "The period is not valid"),

    # -- communities and the community fund (projects service) ------------------------------------
    "unknown_community": ("没有找到这个社区", "This community was not found"),
    "unknown_grid": ("这个社区没有这个网格", "This grid is not part of the community"),
    "duplicate_grid": ("这个网格已经有了", "This grid already exists"),
    "duplicate_representative": ("居民代表名单里有人重复了", "Someone is listed more than once among the representatives"),
    "invalid_settings": ("社区设置填写有误", "The community settings are not valid"),
    "invalid_source": ("资金来源不正确", "The source of the money is not valid"),
    "invalid_amount": ("金额必须大于零", "The amount must be more than zero"),
    "insufficient_fund": ("社区基金余额不足", "The community fund does not have enough money"),
    "reservation_exceeded": ("支出超过了给项目预留的资金", "This spending is more than the money set aside for the project"),

    # -- participatory budgeting rounds (services/projects/budgeting.py) ------------------------
    "invalid_rule": ("计票规则不正确，请选择“得票优先”或“平均份额法”",
                     "This counting rule is not known; choose the greedy rule or the Method of Equal Shares"),
    "invalid_budget": ("预算金额应为零或正数，精确到分", "The budget must be an amount of money, zero or more, to the cent"),
    "invalid_proposals": ("参与分配的提议有误（编号或顺序重复）",
                          "The proposals in the round are not right (a repeated id or place)"),
    "invalid_ballot": ("选票应列出您赞成的提议", "A ballot lists the proposals you approve"),
    "unknown_proposal": ("选票中有不在本轮的提议", "The ballot approves a proposal that is not in this round"),
    "invalid_electorate": ("请选择由全体居民还是居民代表投票", "Choose whether all residents or the representatives vote"),
    "invalid_dates": ("结束时间应晚于现在", "The closing time must be later than now"),
    "not_qualified": ("只有已联署、正在协商的提议才能参加本轮",
                      "Only co-signed proposals in deliberation can take part in the round"),
    "invalid_max_approvals": ("每张选票可选的提议数目不正确", "The number of proposals one ballot may approve is not valid"),
    "too_many_approvals": ("选择的提议超过了本轮允许的数目", "You approved more proposals than this round allows"),
    "round_closed": ("本轮参与式预算已经结束", "This budgeting round has closed"),
    "round_not_due": ("本轮还没有到结束时间", "This budgeting round is not due to close yet"),
    "round_open": ("本轮还在投票中，尚无结果", "This budgeting round is still open; there is no result yet"),

    # -- projects: 共谋 共建 共管 共评 共享 ---------------------------------------------------------
    "wrong_stage": ("项目现在所处的阶段不能进行此操作", "The project is not at a stage where this can be done"),
    "invalid_proposal": ("提议内容有误，请检查后再提交", "The proposal is not complete or not right; please check it"),
    "not_proposer": ("只有提议人才能这样做", "Only the person who made the proposal can do this"),
    "empty_amendment": ("修改后的内容和原来一样", "The change leaves the proposal as it was"),
    "self_cosign": ("提议人不能给自己的提议联署", "You cannot co-sign your own proposal"),
    "already_cosigned": ("您已经联署过了", "You have already co-signed this proposal"),
    "invalid_stance": ("请选择支持、反对或中立", "Please choose support, oppose or neutral"),
    "no_electorate": ("社区还没有居民代表，无法表决", "The community has no residents' representatives to vote yet"),
    "not_in_electorate": ("只有居民代表才能投票", "Only the residents' representatives can vote"),
    "invalid_choice": ("请选择赞成、反对或弃权", "Please choose yes, no or abstain"),
    "already_voted": ("您已经投过票了", "You have already voted"),
    "person_erased": ("此人的个人信息已注销，不能再记录", "This person's personal information was erased and cannot be recorded again"),
    "pledge_for_other": ("居民只能以自己的名义认捐", "Residents can pledge only for themselves"),
    "unknown_pledge": ("没有找到这项认捐", "This pledge was not found"),
    "invalid_kind": ("投入方式不正确", "This kind of contribution is not valid"),
    "invalid_amounts": ("投入的数量和投入方式对不上", "The amounts do not match the kind of contribution"),
    "invalid_progress": ("进度应在0到100之间", "Progress must be between 0 and 100"),
    "progress_backwards": ("进度不能比之前少", "Progress cannot go backwards"),
    "not_finished": ("进度到100%才能完工", "The project can be completed only when progress reaches 100%"),
    "already_maintainer": ("已经在负责维护这个项目了", "They already look after this project"),
    "unknown_problem": ("没有找到这个问题", "This problem report was not found"),
    "already_resolved": ("这个问题已经解决了", "This problem is already resolved"),
    "responsible_unit_required": ("请填写负责这个项目的单位", "Please name the unit responsible for the project"),
    "invalid_score": ("评分应为1到5分", "The score must be from 1 to 5"),
    "already_rated": ("您已经评价过了", "You have already given a rating"),
    "not_a_contributor": ("此人没有参与这个项目", "This person did not contribute to the project"),

    # -- satisfaction ratings, follow-ups and support plans (feedback service) -----------------------
    "invalid_policy": ("评价规则设置有误", "The rating rules are not valid"),
    "person_and_unit_required": ("请填写这个人和他所在的单位", "Please give the person and their unit"),
    "self_rating": ("不能给自己评价", "You cannot rate yourself"),
    "invalid_level": ("满意度应在1到5之间", "The rating must be from 1 to 5"),
    "invalid_dimensions": ("分项评分填写有误", "Some of the detailed scores are not valid"),
    "not_the_rater": ("只有评价人本人才能修改评价", "Only the person who gave the rating can change it"),
    "not_revisable": ("这条评价不能在这里修改", "This rating cannot be changed here"),
    "period_open": ("这一期还没结束", "This period has not ended yet"),
    "period_closed": ("这一期已经结束了", "This period has ended"),
    "unknown_flag": ("没有找到这条异常提示", "This warning was not found"),
    "already_reviewed": ("这条异常提示已经审核过了", "This warning was already reviewed"),
    "burst_ongoing": ("集中好评还在继续，等这一阵过去后再审核",
                      "Top ratings are still coming in; review the burst once it has ended"),
    "own_rating": ("不能对自己的评价申诉，可以直接修改", "You cannot appeal your own rating; change it instead"),
    "already_excluded": ("这条评价已经不计入结果了", "This rating is already left out of the results"),
    "already_appealed": ("这条评价已经申诉过了", "This rating has already been appealed"),
    "no_pending_appeal": ("没有待处理的申诉", "There is no appeal waiting for a decision"),
    "own_appeal": ("申诉人和被评价人不能处理这项申诉", "The person appealing and the person rated cannot decide the appeal"),
    "case_closed": ("这件事已经办结了", "This case is closed"),
    "contact_first": ("请先回访居民", "Please call the resident back first"),
    "rectification_first": ("请先登记整改情况", "Please record what was put right first"),
    "invalid_mentor": ("帮扶人不能是被帮扶的人自己", "The mentor must be someone else"),
    "plan_closed": ("这个帮扶计划已经结束了", "This support plan is closed"),

    # -- volunteer cards, activities, hours and rewards (volunteers service) -------------------------
    "no_card": ("请先办理志愿者证", "Please register for a volunteer card first"),
    "invalid_activity": ("活动信息填写有误", "The activity details are not valid"),
    "not_organiser": ("只有活动组织者才能这样做", "Only the activity's organiser can do this"),
    "activity_cancelled": ("活动已经取消了", "The activity has been cancelled"),
    "activity_over": ("活动已经结束了", "The activity is over"),
    "activity_not_over": ("活动还没结束，不能补录", "The activity is not over yet, so hours cannot be added afterwards"),
    "full": ("活动名额已满", "The activity is full"),
    "already_signed_up": ("您已经报名了", "You have already signed up"),
    "not_signed_up": ("您还没有报名这个活动", "You have not signed up for this activity"),
    "already_attended": ("您已经签到了，如需更改请联系组织者", "You have already checked in; ask the organiser to change it"),
    "wrong_code": ("签到码不对", "The check-in code is wrong"),
    "already_checked_in": ("您已经签到过了", "You have already checked in"),
    "not_checked_in": ("您还没有签到", "You have not checked in"),
    "outside_activity_time": ("时间不在活动时段内", "The time is outside the activity's hours"),
    "attendance_in_future": ("活动还没进行到这个时间，不能提前登记或审核服务时长",
                             "That time has not come yet: hours are recorded and approved once served"),
    "checkin_not_open": ("还没到签到时间：签到在活动开始前不久才开放",
                         "Check-in is not open yet: it opens shortly before the start"),
    "already_recorded": ("这个人的出勤已经登记过了", "Their attendance is already recorded"),
    "invalid_times": ("结束时间要晚于开始时间", "The end must be after the start"),
    "overlapping_claim": ("和已登记的服务时间重叠了", "This overlaps time that is already recorded"),
    "already_claimed": ("这个活动已经登记过服务时长了", "Hours for this activity are already recorded"),
    "nothing_to_claim": ("没有可以登记的服务时长", "There are no hours to record"),
    "not_the_person": ("只能为自己申请注销个人信息", "Only you may ask for your own information to be erased"),
    "already_erased": ("个人信息已经注销", "This person's information was erased already"),
    "erasure_requested": ("已经申请注销,正在等待工作人员确认", "Your erasure was asked for already and waits for staff"),
    "no_erasure_request": ("这个人没有待确认的注销申请", "This person has no erasure request waiting"),
    "obligation_open": ("还有未办结的事项(如回访工单),办结后才能注销", "An open obligation (such as a follow-up case) keeps this information until it ends"),
    "nothing_to_correct": ("请填写要更正的姓名或电话", "Say what to correct: the name or the phone"),
    "unknown_claim": ("没有找到这条服务时长记录", "This record of hours was not found"),
    "own_claim": ("不能审核自己的服务时长", "You cannot approve your own hours"),
    "already_decided": ("这条服务时长已经审核过了", "These hours have already been decided"),
    "invalid_minutes": ("核定的时长不正确", "The approved time is not valid"),
    "insufficient_points": ("积分不够", "You do not have enough points"),
    "out_of_stock": ("已经兑换完了", "None are left"),
    "unknown_redemption": ("没有找到这条兑换记录", "This redemption was not found"),
    "already_fulfilled": ("已经发放过了", "This has already been handed out"),

    # -- the web client's own situations --------------------------------------------------------
    "service_down_part": ("暂时无法获取", "Temporarily unavailable"),
    "session_expired": ("长时间没有操作，请重新登录", "Your session has expired; please sign in again"),
    "csrf_failed": ("页面已过期，请刷新后再试", "The page has expired; please reload and try again"),
    "signin_failed": ("用户名或密码不对", "The username or password is wrong"),

    # -- the command line (`cocreate`) and `make demo` -------------------------------------------
    "platform_unreachable": ("无法连接平台，请确认平台已经启动", "Cannot reach the platform; please check that it is running"),
    "platform_not_ready": ("平台启动后一直没有准备好，请查看平台的日志",
                           "The platform started but did not become ready; please look at its log"),
    "not_the_platform": ("这个地址上不是本平台", "This address does not lead to the platform"),
    "interrupted": ("已中断", "Stopped before it was done"),
}

MESSAGES: Mapping[str, Mapping[str, str]] = MappingProxyType({
    reason: MappingProxyType(dict(zip(LOCALES, texts))) for reason, texts in _CATALOGUE.items()})

# The message when the reason is missing or not in the catalogue.
GENERIC: Mapping[str, str] = MappingProxyType({
    "zh-CN": "操作未能完成，请稍后再试", "en": "That did not work; please try again later"})

# The reason whose message stands for an error that came with a status code only.
STATUS_REASONS: Mapping[int, str] = MappingProxyType({
    400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 412: "precondition_failed", 413: "body_too_large", 414: "url_too_long",
    415: "unsupported_media_type", 422: "validation_failed", 429: "rate_limited", 500: "internal_error",
    502: "bad_gateway", 503: "service_unavailable", 504: "timeout",
})

_Q = re.compile(r";\s*q\s*=\s*([0-9.]+)", re.IGNORECASE)


def _one_locale(tag: str) -> str | None:
    tag = tag.strip().replace("_", "-").lower()
    if tag == "zh" or tag.startswith("zh-"):
        return "zh-CN"
    if tag.startswith("en"):
        return "en"
    return None


def match_locale(locale: str | None) -> str:
    """One of :data:`LOCALES` for a language tag (``zh``, ``zh-CN``, ``zh_Hans_CN``, ``zh-Hans`` ->
    ``zh-CN``; ``en``, ``en-GB``, ... -> ``en``) or an ``Accept-Language`` value (the most
    preferred of its languages that is one of ours); anything else is ``zh-CN``."""
    if not locale:
        return DEFAULT_LOCALE
    ranked = []
    for index, part in enumerate(locale.split(",")):
        tag = part.split(";", 1)[0]
        weight = _Q.search(part)
        try:
            q = float(weight.group(1)) if weight else 1.0
        except ValueError:
            q = 0.0
        if q > 0:
            ranked.append((-q, index, tag))
    for _q, _index, tag in sorted(ranked):
        found = _one_locale(tag)
        if found is not None:
            return found
    return DEFAULT_LOCALE


def message(reason: str | None, locale: str = DEFAULT_LOCALE, default: str | None = None) -> str:
    """The message for ``reason`` in ``locale`` (see :func:`match_locale`). A reason missing or not
    in the catalogue gives ``default`` when one is given, else a generic message in ``locale``."""
    lang = match_locale(locale)
    entry = MESSAGES.get(reason) if reason else None
    if entry is not None:
        return entry[lang]
    return default if default is not None else GENERIC[lang]


def message_for_status(status: int, locale: str = DEFAULT_LOCALE) -> str:
    """The message for an error that has only an HTTP status code (other 4xx and 5xx codes read
    as 400 and 500; anything else gives the generic message)."""
    reason = STATUS_REASONS.get(status)
    if reason is None and isinstance(status, int) and 400 <= status < 600:
        reason = STATUS_REASONS[400 if status < 500 else 500]
    return message(reason, locale)


def message_for_error(body: Any, locale: str = DEFAULT_LOCALE, status: int | None = None) -> str:
    """The message for an error answer in the platform's shape ``{code, status, message, errors}``:
    by ``errors.reason`` when the catalogue has it, else by the status code (``code``, or
    ``status`` when the body has none), else the generic message."""
    errors = body.get("errors") if isinstance(body, Mapping) else None
    reason = errors.get("reason") if isinstance(errors, Mapping) else None
    if isinstance(reason, str) and reason in MESSAGES:
        return message(reason, locale)
    code = body.get("code") if isinstance(body, Mapping) else None
    code = code if isinstance(code, int) and not isinstance(code, bool) else status
    return message_for_status(code, locale) if code is not None else message(None, locale)


# -- field-level messages: what is wrong with one field of a request -----------------------------
#
# A 422 (or 400) answer names the fields it refuses under ``errors.json``, ``errors.query``, ...:
# ``{"json": {"title": ["Missing data for required field."]}}``. Those texts come from marshmallow
# (its fields' ``default_error_messages``, its validators' ``message_*`` / ``default_message``),
# webargs and the platform's own schemas and request checks. Each is listed here as its English
# template — ``{name}`` stands for a part that varies, a number for ``{min}``, ``{max}``, ``{equal}``
# and ``{n}`` — with its Chinese. :func:`field_message` translates one text, :func:`field_errors`
# a whole structure; a text not listed stays as it is. ``tests/unit/test_messages.py`` lists the
# validators and fields of every schema of the services and the gateway and fails while one of
# their messages has no translation here.

_RANGE_OPS = {"greater than or equal to": "不小于", "greater than": "大于",
              "less than or equal to": "不大于", "less than": "小于"}
_FIELD_TEMPLATES: list[tuple[str, str]] = [
    # marshmallow: every field, the schema
    ("Missing data for required field.", "必填项，不能缺少"),
    ("Field may not be null.", "不能为空值"),
    ("Invalid value.", "取值无效"),
    ("Invalid type.", "类型不对"),
    ("Invalid input type.", "提交的内容类型不对"),
    ("Unknown field.", "不认识的字段，请删除"),
    # marshmallow: the fields' own types
    ("Not a valid list.", "应为列表"),
    ("Not a valid tuple.", "应为列表"),
    ("Not a valid string.", "应为文字"),
    ("Not a valid utf-8 string.", "不是有效的文字（UTF-8）"),
    ("Not a valid UUID.", "不是有效的编号（UUID）"),
    ("Not a valid number.", "应为数字"),
    ("Number too large.", "数字太大了"),
    ("Not a valid integer.", "应为整数"),
    ("Special numeric values (nan or infinity) are not permitted.", "不能是无穷大或非数字"),
    ("Not a valid boolean.", "应为是或否（true 或 false）"),
    ("Not a valid datetime.", "不是有效的日期时间"),
    ("Not a valid aware datetime.", "不是有效的日期时间，需要带时区（例如 2024-05-01T09:00:00+08:00）"),
    ("Not a valid naive datetime.", "不是有效的日期时间，不能带时区"),
    ("Not a valid date.", "不是有效的日期（例如 2024-05-01）"),
    ("Not a valid time.", "不是有效的时间"),
    ('"{input}" cannot be formatted as a datetime.', "“{input}”无法作为日期时间"),
    ('"{input}" cannot be formatted as a date.', "“{input}”无法作为日期"),
    ('"{input}" cannot be formatted as a time.', "“{input}”无法作为时间"),
    ("Not a valid period of time.", "不是有效的时长"),
    ("{input} cannot be formatted as a timedelta.", "{input}无法作为时长"),
    ("Not a valid mapping type.", "应为对象（键值对）"),
    ("Not a valid URL.", "不是有效的网址"),
    ("Not a valid email address.", "不是有效的电子邮箱地址"),
    ("Not a valid IP address.", "不是有效的IP地址"),
    ("Not a valid IPv4 address.", "不是有效的IPv4地址"),
    ("Not a valid IPv6 address.", "不是有效的IPv6地址"),
    ("Not a valid IP interface.", "不是有效的IP接口"),
    ("Not a valid IPv4 interface.", "不是有效的IPv4接口"),
    ("Not a valid IPv6 interface.", "不是有效的IPv6接口"),
    # marshmallow: validators (Range in every combination of its bounds, Length, OneOf, ...)
    *((f"Must be {low} {{min}} and {high} {{max}}.", f"应{_RANGE_OPS[low]}{{min}}且{_RANGE_OPS[high]}{{max}}")
      for low in ("greater than or equal to", "greater than") for high in ("less than or equal to", "less than")),
    *((f"Must be {op} {{min}}.", f"应{zh}{{min}}") for op, zh in _RANGE_OPS.items() if op.startswith("greater")),
    *((f"Must be {op} {{max}}.", f"应{zh}{{max}}") for op, zh in _RANGE_OPS.items() if op.startswith("less")),
    ("Shorter than minimum length {min}.", "长度不能少于{min}"),
    ("Longer than maximum length {max}.", "长度不能超过{max}"),
    ("Length must be between {min} and {max}.", "长度应在{min}到{max}之间"),
    ("Length must be {equal}.", "长度应为{equal}"),
    ("Must be equal to {other}.", "应等于{other}"),
    ("String does not match expected pattern.", "格式不对"),
    ("Invalid input.", "输入无效"),
    ("Must be one of: {choices}.", "应为以下之一：{choices}"),
    ("One or more of the choices you made was not in: {choices}.", "有的选项不在以下范围内：{choices}"),
    ("One or more of the choices you made was in: {choices}.", "有的选项不允许：{choices}"),
    # webargs
    ("Invalid JSON body.", "提交的内容不是有效的JSON"),
    # the platform's schemas (their own ``error=`` texts and schema checks)
    ("1-64 letters, digits, '_', '-' or '.'", "应为1到64个字母、数字、“_”、“-”或“.”"),
    ("YYYY-MM or YYYY-Qn", "应为年月（YYYY-MM）或年份加季度（YYYY-Qn）"),
    ("six digits", "应为六位数字"),
    ("hours with at most one decimal", "应为小时数，最多一位小数"),
    ("day:hours pairs separated by commas", "应为“日期:小时数”，多项之间用逗号分隔"),
    ("give exactly one of version or at", "version 和 at 只能填写其中一个"),
    # the platform's request checks before any schema (services.kernel.web)
    ("nested more than {n} levels", "嵌套超过了{n}层"),
    ("must not contain NUL characters", "不能包含空字符（NUL）"),
    ("must not contain lone surrogates (not valid Unicode text)", "不能包含孤立的代理字符（不是有效的Unicode文字）"),
    ("keys must not contain NUL characters", "键名不能包含空字符（NUL）"),
    ("keys must not contain lone surrogates (not valid Unicode text)", "键名不能包含孤立的代理字符（不是有效的Unicode文字）"),
    ("must lie between {min} and {max}", "应在{min}到{max}之间"),
    ("at most {n} bytes", "最多{n}字节"),
]
_NUMBER_PLACEHOLDERS = ("min", "max", "equal", "n")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _template_pattern(template: str) -> re.Pattern[str]:
    parts, at = [], 0
    for found in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[at:found.start()]))
        name = found.group(1)
        parts.append(rf"(?P<{name}>-?\d+(?:\.\d+)?)" if name in _NUMBER_PLACEHOLDERS else rf"(?P<{name}>.*?)")
        at = found.end()
    parts.append(re.escape(template[at:]))
    return re.compile("".join(parts), re.DOTALL)


FIELD_MESSAGES: Mapping[str, str] = MappingProxyType(dict(_FIELD_TEMPLATES))  # English template -> Chinese
_FIELD_PATTERNS = tuple((_template_pattern(en), zh) for en, zh in _FIELD_TEMPLATES)


def field_message(text: str, locale: str = DEFAULT_LOCALE) -> str:
    """One field-level message (``"Not a valid integer."``) in ``locale``: in Chinese when
    :data:`FIELD_MESSAGES` has its template, else — and in English — as it is."""
    if match_locale(locale) != "zh-CN" or not isinstance(text, str):
        return text
    for pattern, zh in _FIELD_PATTERNS:
        matched = pattern.fullmatch(text)
        if matched is not None:
            return zh.format(**matched.groupdict())
    return text


def field_errors(errors: Any, locale: str = DEFAULT_LOCALE) -> Any:
    """``errors`` (the field errors of an answer: ``{"json": {"title": ["..."]}}``, lists and
    mappings at any depth) with every text passed through :func:`field_message`; keys and
    anything that is not text are kept."""
    if isinstance(errors, str):
        return field_message(errors, locale)
    if isinstance(errors, Mapping):
        return {key: field_errors(value, locale) for key, value in errors.items()}
    if isinstance(errors, (list, tuple)):
        return [field_errors(value, locale) for value in errors]
    return errors
