"""``cocreate`` — residents' and staff's actions and reports from a terminal, over the public API.

    cocreate login res1 --password demo        # keeps the token in ~/.cocreate/token
    cocreate projects --community xinyang      # a table; --json for the API's JSON
    cocreate propose --community xinyang --grid g1 --title 小区安装路灯 --category safety \\
                     --description "背街小巷夜间无照明" --location "3 号楼后" --cost 900000 --requested 800000
    cocreate cosign PROJECT_ID
    cocreate dashboard xinyang
    cocreate call GET /rankings/xinyang/cadre  # any route of the public API

Where the gateway is: ``--url``, else ``COCREATE_URL``, else ``http://127.0.0.1:${GATEWAY_PORT:-8000}``
(:func:`cocreate_client.default_url`, the rule ``make demo`` follows too). The token: ``--token``,
``COCREATE_TOKEN`` or the file ``login`` writes (``COCREATE_TOKEN_FILE``, default ~/.cocreate/token).

Output is a table (or ``key: value`` lines) by default, the API's JSON with ``--json``, one field
with ``--field NAME``. Errors are one line on stderr, in Chinese or English (``COCREATE_LANG``,
else ``LC_ALL``/``LC_MESSAGES``/``LANG``; Chinese unless that names English). Exit codes: 0 done,
1 the API refused, 2 usage (a wrong or missing argument), 3 the platform cannot be reached.
"""

from __future__ import annotations

import argparse
import getpass
import http.client
import json
import os
import sys
import textwrap
import unicodedata
from pathlib import Path
from typing import Any

from cocreate_client import ApiError, Client, default_url
from cocreate_client.messages import match_locale, message, message_for_error

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130

# The platform's project categories, stages and the choices of its commands (the services' own
# lists; tests/e2e/test_cli.py checks that these stay the same as the services').
CATEGORIES = {
    "environment": "环境整治 environment", "facilities": "公共设施 public facilities", "greening": "绿化美化 greening",
    "elderly_care": "养老助老 elderly care", "children": "儿童友好 children", "culture": "文化活动 culture",
    "safety": "平安建设 safety", "parking": "停车交通 parking and traffic", "other": "其他 other",
}
STAGES = {
    "co_plan": "共谋 co-planning", "co_build": "共建 co-building", "co_manage": "共管 co-managing",
    "co_evaluate": "共评 co-evaluating", "co_share": "共享 co-sharing", "rejected": "否决 rejected by the council",
    "withdrawn": "撤回 withdrawn by the proposer",
}
SUBJECT_KINDS = ("cadre", "grid_worker", "unit", "service", "project")
STANCES = ("support", "oppose", "neutral")
CHOICES = ("yes", "no", "abstain")

EPILOG = """\
where the platform is:
  --url, else COCREATE_URL, else http://127.0.0.1:${GATEWAY_PORT:-8000} (as `make run` serves it)

exit codes:
  0  done
  1  the API refused (the message says why; --json prints the API's error on stderr)
  2  usage: a wrong or missing argument
  3  the platform cannot be reached (is `make run` running? is COCREATE_URL / GATEWAY_PORT right?)

errors are one line in Chinese or English: COCREATE_LANG (zh-CN or en), else LC_ALL, LC_MESSAGES, LANG.

examples:
  cocreate login res1 --password demo
  cocreate projects --community xinyang --stage co_plan
  cocreate propose --community xinyang --grid g1 --title 小区安装路灯 --category safety \\
      --description "背街小巷夜间无照明" --location "3 号楼后" --cost 900000 --requested 800000
  cocreate dashboard xinyang
  cocreate --json projects --community xinyang      # the API's JSON, for scripts
  cocreate call GET /rankings/xinyang/cadre         # any route of the public API
"""


def token_file() -> Path:
    return Path(os.environ.get("COCREATE_TOKEN_FILE") or Path.home() / ".cocreate" / "token")


def locale() -> str:
    """The language of error messages: ``COCREATE_LANG``, else the POSIX locale variables."""
    for name in ("COCREATE_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name)
        if value:
            return match_locale(value.split(".", 1)[0].split("@", 1)[0])
    return match_locale(None)


# -- the parser -------------------------------------------------------------------------------------

class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=30)


def _choices(values) -> str:
    return ", ".join(values)


def _output_options() -> argparse.ArgumentParser:
    """--json and --field, accepted before or after the command (``cocreate projects --json``)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("output")
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print the API's JSON instead of a table (for scripts)")
    group.add_argument("--field", metavar="NAME", default=argparse.SUPPRESS,
                       help="print only this field of the answer (dotted for nested ones, e.g. project_id, "
                            "card.points_balance)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    output = _output_options()
    parser = argparse.ArgumentParser(
        prog="cocreate", formatter_class=_Formatter, parents=[output],
        description="共同缔造: the platform's public API from a terminal — residents' and staff's actions and "
                    "reports.\nSign in first with `cocreate login USERNAME` (after `make demo`: res1 … res14, "
                    "rep1 … rep9, chen; password demo).",
        epilog=EPILOG)
    parser.add_argument("--url", default=None,
                        help="the gateway (default: COCREATE_URL, else http://127.0.0.1:${GATEWAY_PORT:-8000}; "
                             f"now {default_url()})")
    parser.add_argument("--token", default=os.environ.get("COCREATE_TOKEN"),
                        help="a bearer token (default: COCREATE_TOKEN, else the file `login` writes: "
                             "COCREATE_TOKEN_FILE, default ~/.cocreate/token)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True

    def command(name: str, help: str, examples: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        epilog = ("examples:\n" + "\n".join(f"  {e}" for e in examples)) if examples else None
        return sub.add_parser(name, help=help, description=help, epilog=epilog, parents=[output],
                              formatter_class=_Formatter)

    login = command("login", "sign in with a username and password and keep the token (COCREATE_TOKEN_FILE, "
                             "default ~/.cocreate/token)",
                    ("cocreate login res1 --password demo", "cocreate login chen     # asks for the password"))
    login.add_argument("username", help="e.g. res1, rep1, chen after `make demo`")
    login.add_argument("--password", help="default: asked for (read from stdin when it is not a terminal)")
    command("whoami", "who the kept token says you are: person, roles, community", ("cocreate whoami",))

    projects = command("projects", "list a community's projects (20 a page)",
                       ("cocreate projects --community xinyang",
                        "cocreate projects --community xinyang --stage co_build",
                        "cocreate projects --q 路灯 --json"))
    projects.add_argument("--community", metavar="ID", help="community id (default: yours)")
    projects.add_argument("--stage", choices=list(STAGES), metavar="STAGE",
                          help=f"one of: {_choices(STAGES)}")
    projects.add_argument("--category", choices=list(CATEGORIES), metavar="CATEGORY",
                          help=f"one of: {_choices(CATEGORIES)}")
    projects.add_argument("--grid", metavar="ID", help="grid id, e.g. g1")
    projects.add_argument("--q", metavar="TEXT", help="search in titles, descriptions and locations")
    projects.add_argument("--page", type=int, default=None, help="page number (default 1)")
    project = command("project", "one project with its volunteer minutes and satisfaction score",
                      ("cocreate project PROJECT_ID",))
    project.add_argument("project_id")

    propose = command("propose", "共谋: propose a project (a resident of the community)",
                      ('cocreate propose --community xinyang --grid g1 --title 小区安装路灯 --category safety \\\n'
                       '      --description "背街小巷夜间无照明" --location "3 号楼后" --cost 900000 --requested 800000',))
    required = propose.add_argument_group("required")
    required.add_argument("--community", required=True, metavar="ID", help="community id, e.g. xinyang")
    required.add_argument("--grid", required=True, metavar="ID", help="grid id, e.g. g1")
    required.add_argument("--title", required=True, help="a short title")
    required.add_argument("--description", required=True, help="what and why")
    required.add_argument("--category", required=True, choices=list(CATEGORIES), metavar="CATEGORY",
                          help=f"one of: {_choices(CATEGORIES)}")
    required.add_argument("--location", required=True, help="where, e.g. 3 号楼后")
    required.add_argument("--cost", type=int, required=True, metavar="FEN",
                          help="estimated cost in fen (分; 900000 = ¥9,000)")
    required.add_argument("--requested", type=int, required=True, metavar="FEN",
                          help="amount asked of the community fund in fen, at most the cost")
    cosign = command("cosign", "co-sign someone else's proposal (a resident)", ("cocreate cosign PROJECT_ID",))
    cosign.add_argument("project_id")
    opinion = command("opinion", "post an opinion during deliberation",
                      ('cocreate opinion PROJECT_ID support "老人上下楼更安全"',))
    opinion.add_argument("project_id")
    opinion.add_argument("stance", choices=STANCES, help=f"one of: {_choices(STANCES)}")
    opinion.add_argument("text")
    open_vote = command("open-vote", "open the council vote (cadre); reserves the requested amount",
                        ("cocreate open-vote PROJECT_ID --unit-id xinyang-jwh --unit-name 新阳社区居委会",))
    open_vote.add_argument("project_id")
    open_vote.add_argument("--unit-id", help="the unit responsible for the project")
    open_vote.add_argument("--unit-name", help="its name (with --unit-id)")
    vote = command("vote", "cast your ballot (a representative)", ("cocreate vote PROJECT_ID yes",))
    vote.add_argument("project_id")
    vote.add_argument("choice", choices=CHOICES, help=f"one of: {_choices(CHOICES)}")
    close_vote = command("close-vote", "close the council vote and count it (cadre)",
                         ("cocreate close-vote PROJECT_ID",))
    close_vote.add_argument("project_id")
    pledge = command("pledge", "共建: pledge labour (minutes) or money (fen)",
                     ("cocreate pledge PROJECT_ID --labour-minutes 120",
                      "cocreate pledge PROJECT_ID --money-fen 50000"))
    pledge.add_argument("project_id")
    amount = pledge.add_mutually_exclusive_group(required=True)
    amount.add_argument("--labour-minutes", type=int, metavar="N")
    amount.add_argument("--money-fen", type=int, metavar="N")

    rounds = command("rounds", "参与式预算: a community's budgeting rounds", ("cocreate rounds --community xinyang",))
    rounds.add_argument("--community", metavar="ID", help="community id (default: yours)")
    rounds.add_argument("--status", choices=["open", "closed"], help="open or closed")
    show_round = command("round", "one budgeting round: proposals, turnout, your ballot, the outcome explained",
                         ("cocreate round ROUND_ID",))
    show_round.add_argument("round_id")
    open_round = command("open-round", "open a budgeting round (cadre): reserves the budget from the fund",
                         ("cocreate open-round --community xinyang --title 2027年度微项目 --budget 5000000 \\\n"
                          "      --rule mes --closes 2030-01-15T12:00:00+08:00 PROJECT_ID   # more ids: more proposals",))
    open_round.add_argument("project_ids", nargs="+", metavar="PROJECT_ID",
                            help="co-signed proposals in deliberation")
    required = open_round.add_argument_group("required")
    required.add_argument("--community", required=True, metavar="ID")
    required.add_argument("--title", required=True)
    required.add_argument("--budget", type=int, required=True, metavar="FEN", help="the budget in fen (分)")
    required.add_argument("--rule", required=True, choices=["greedy", "mes"],
                          help="greedy (most approvals first) or mes (Method of Equal Shares, completed by greedy)")
    required.add_argument("--closes", required=True, metavar="TIME", help="ISO 8601 with a time zone")
    open_round.add_argument("--electorate", choices=["residents", "representatives"], default="residents")
    open_round.add_argument("--electorate-size", type=int, metavar="N", help="the electorate, for turnout")
    open_round.add_argument("--max-approvals", type=int, metavar="N", help="most proposals one ballot approves")
    approve = command("approve", "cast or revise your approval ballot in a round (the last one counts)",
                      ("cocreate approve ROUND_ID PROJECT_ID   # more ids: approve more", "cocreate approve ROUND_ID   # none"))
    approve.add_argument("round_id")
    approve.add_argument("project_ids", nargs="*", metavar="PROJECT_ID")
    close_round = command("close-round", "close a round and count it by its rule (cadre)",
                          ("cocreate close-round ROUND_ID",))
    close_round.add_argument("round_id")
    verify_round = command("verify-round", "recount a closed round from the log: is the outcome identical?",
                           ("cocreate verify-round ROUND_ID",))
    verify_round.add_argument("round_id")

    command("card", "my volunteer card (义工卡): hours, points, claims", ("cocreate card",))
    rate = command("rate", "rate a cadre, unit, service or project: 1 非常不满意 … 5 非常满意",
                   ('cocreate rate chen 5 --comment "办事热情"',))
    rate.add_argument("subject_id", help="e.g. chen, lin, zhou after `make demo`")
    rate.add_argument("level", type=int, choices=range(1, 6), metavar="LEVEL", help="1 to 5")
    rate.add_argument("--comment", default="")
    ranking = command("ranking", "a community's satisfaction ranking (this period unless --period)",
                      ("cocreate ranking xinyang", "cocreate ranking xinyang --kind unit --period 2026-05"))
    ranking.add_argument("community_id")
    ranking.add_argument("--kind", default="cadre", choices=SUBJECT_KINDS, metavar="KIND",
                         help=f"one of: {_choices(SUBJECT_KINDS)} (default cadre)")
    ranking.add_argument("--period", help="e.g. 2026-05 (default: the current one)")
    dashboard = command("dashboard", "a community's dashboard: projects, fund, volunteer hours, satisfaction",
                        ("cocreate dashboard xinyang",))
    dashboard.add_argument("community_id")
    dashboard.add_argument("--kind", default="cadre", choices=SUBJECT_KINDS, metavar="KIND",
                           help=f"which satisfaction ranking to show, one of: {_choices(SUBJECT_KINDS)}")
    command("me", "my card, proposals, pledges, ratings and their follow-ups", ("cocreate me",))

    call = command("call", "any route of the public API (below /api/v1)",
                   ("cocreate call GET /rankings/xinyang/cadre",
                    "cocreate call POST /projects/PROJECT_ID/opinions '{\"stance\": \"support\", \"text\": \"好\"}'"))
    call.add_argument("method", choices=["GET", "POST", "PUT", "PATCH", "DELETE"], metavar="METHOD",
                      help="GET, POST, PUT, PATCH or DELETE")
    call.add_argument("path", help="below /api/v1, e.g. /rankings/xinyang/cadre")
    call.add_argument("body", nargs="?", help="a JSON body")
    return parser


# -- running a command ------------------------------------------------------------------------------

class UsageError(Exception):
    """A mistake in the arguments that argparse cannot see (exit code 2)."""


def run(args, client: Client):
    c = args.command
    if c == "login":
        password = args.password
        if password is None:
            password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        client.login(args.username, password)
        path = token_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(client.token)
        path.chmod(0o600)
        return client.whoami()
    if c == "whoami":
        return client.whoami()
    if c == "projects":
        return client.projects(community_id=args.community, stage=args.stage, category=args.category,
                               grid_id=args.grid, q=args.q, page=args.page)
    if c == "project":
        return client.project(args.project_id)
    if c == "propose":
        return client.propose(community_id=args.community, grid_id=args.grid, title=args.title,
                              description=args.description, category=args.category, location=args.location,
                              estimated_cost_fen=args.cost, requested_fen=args.requested)
    if c == "cosign":
        return client.cosign(args.project_id)
    if c == "opinion":
        return client.opinion(args.project_id, args.stance, args.text)
    if c == "open-vote":
        if args.unit_name and not args.unit_id:
            raise UsageError("--unit-name needs --unit-id")
        unit = {"unit_id": args.unit_id, "name": args.unit_name or args.unit_id} if args.unit_id else None
        return client.open_vote(args.project_id, unit)
    if c == "vote":
        return client.ballot(args.project_id, args.choice)
    if c == "close-vote":
        return client.close_vote(args.project_id)
    if c == "pledge":
        if args.labour_minutes is not None:
            pledge_id = client.pledge(args.project_id, kind="labour", labour_minutes=args.labour_minutes)
        else:
            pledge_id = client.pledge(args.project_id, kind="money", money_fen=args.money_fen)
        return {"pledge_id": pledge_id, "project_id": args.project_id}
    if c == "rounds":
        community = args.community or client.whoami().get("community")
        if not community:
            raise UsageError("--community is needed (your token names no community)")
        return client.rounds(community, args.status)
    if c == "round":
        return client.budget_round(args.round_id)
    if c == "open-round":
        spec = {"title": args.title, "budget_fen": args.budget, "rule": args.rule, "project_ids": args.project_ids,
                "closes_at": args.closes, "electorate": args.electorate}
        for key, value in (("electorate_size", args.electorate_size), ("max_approvals", args.max_approvals)):
            if value is not None:
                spec[key] = value
        return client.open_round(args.community, **spec)
    if c == "approve":
        return client.approve(args.round_id, args.project_ids)
    if c == "close-round":
        return client.close_round(args.round_id)
    if c == "verify-round":
        return client.verify_round(args.round_id)
    if c == "card":
        return client.card()
    if c == "rate":
        return client.rate(args.subject_id, args.level, args.comment)
    if c == "ranking":
        return client.ranking(args.community_id, args.kind, args.period)
    if c == "dashboard":
        return client.dashboard(args.community_id, args.kind)
    if c == "me":
        return client.me()
    try:
        body = json.loads(args.body) if args.body else None
    except ValueError as error:
        raise UsageError(f"the body is not JSON: {error}") from None
    if not args.path.startswith("/"):
        raise UsageError("the path starts with / (below /api/v1), e.g. /rankings/xinyang/cadre")
    return client.request(args.method, args.path, body)


# -- output -----------------------------------------------------------------------------------------

def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 0 if unicodedata.combining(ch) else 1
               for ch in text)


def _clip(text: str, limit: int) -> str:
    if _width(text) <= limit:
        return text
    out, used = "", 0
    for ch in text:
        w = _width(ch)
        if used + w > limit - 1:
            break
        out, used = out + ch, used + w
    return out + "…"


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def _yuan(fen: Any) -> str:
    return f"¥{fen / 100:,.2f}" if isinstance(fen, (int, float)) and not isinstance(fen, bool) else _cell(fen)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return ", ".join(_cell(v) for v in value) or "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return " ".join(str(value).split())


def _label(key: str) -> str:
    return key[:-4] + " (¥)" if key.endswith("_fen") else key


def _value(key: str, value: Any) -> str:
    return _yuan(value) if key.endswith("_fen") else _cell(value)


def table(rows: list[dict], columns: list[str] | None = None, max_cell: int = 40) -> str:
    if not rows:
        return "(none)"
    if columns is None:
        columns = _auto_columns(rows)
    cells = [[_clip(_value(col, row.get(col)), max_cell) for col in columns] for row in rows]
    heads = [_label(col) for col in columns]
    widths = [max(_width(h), *(_width(r[i]) for r in cells)) for i, h in enumerate(heads)]
    lines = ["  ".join(_pad(h, w) for h, w in zip(heads, widths)).rstrip()]
    lines += ["  ".join(_pad(c, w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def _auto_columns(rows: list[dict]) -> list[str]:
    if all("project_id" in r and "title" in r for r in rows):
        return PROJECT_COLUMNS
    if all("rating_id" in r for r in rows):
        return ["subject_name", "level", "comment", "period", "revisions", "case_id"]
    keys: list[str] = []
    for row in rows:
        for key, value in row.items():
            if key not in keys and not isinstance(value, (dict, list)):
                keys.append(key)
    if len(rows) > 1:  # a column with the same value in every row says nothing
        keys = [k for k in keys if len({_cell(r.get(k)) for r in rows}) > 1] or keys
    quiet = [k for k in keys if not (k.endswith("_at") or k.endswith("_label") or k == "version")]
    keys = quiet if len(quiet) >= 3 else keys
    ids = [k for k in keys if k.endswith("_id") or k == "id"]
    rest = [k for k in keys if k not in ids]
    return (ids[:2] + rest)[:9]


def key_values(data: dict, prefix: str = "") -> tuple[list[tuple[str, str]], list[tuple[str, list]]]:
    """``key: value`` pairs of a nested dict (nested keys dotted) and its lists of records."""
    pairs: list[tuple[str, str]] = []
    tables: list[tuple[str, list]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if isinstance(value.get("items"), list):
                tables.append((name, value["items"]))
                continue
            inner_pairs, inner_tables = key_values(value, name + ".")
            pairs += inner_pairs
            tables += inner_tables
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.append((name, value))
        else:
            pairs.append((_label(name), _value(key, value)))
    return pairs, tables


def render_record(data: dict) -> str:
    pairs, tables = key_values(data)
    width = max((_width(k) for k, _ in pairs), default=0)
    out = [f"{_pad(k + ':', width + 1)} {v}" for k, v in pairs]
    for name, rows in tables:
        out += ["", f"{name} ({len(rows)}):", textwrap.indent(table(rows), "  ")]
    return "\n".join(out)


PROJECT_COLUMNS = ["project_id", "stage", "phase", "cosigner_count", "progress", "requested_fen", "title"]


def _project_summary(p: dict) -> dict:
    vote = p.get("vote") or {}
    tally = vote.get("tally") or {}
    summary = {
        "project_id": p.get("project_id"), "title": p.get("title"),
        "stage": p.get("stage_label") or p.get("stage"), "phase": p.get("phase_label") or p.get("phase"),
        "community_id": p.get("community_id"), "grid_id": p.get("grid_id"),
        "category": p.get("category_label") or p.get("category"), "location": p.get("location"),
        "proposer": p.get("proposer_name"),
        "cosigners": f"{p.get('cosigner_count', 0)}/{p.get('cosigners_required', '?')}",
        "estimated_cost_fen": p.get("estimated_cost_fen"), "requested_fen": p.get("requested_fen"),
        "progress": f"{p.get('progress', 0)}%",
    }
    if vote:
        summary["vote"] = (f"{tally.get('yes', 0)} yes, {tally.get('no', 0)} no, {tally.get('abstain', 0)} abstain"
                           if tally else f"open, {vote.get('ballots_cast', 0)} of {vote.get('electorate_size')} voted")
    if p.get("my_actions") is not None:
        summary["you can"] = p.get("my_actions")
    return summary


def _render_round(r: dict) -> str:
    """A round: its record, the proposals (with the outcome once closed) and why each won or lost."""
    head = {"round_id": r.get("round_id"), "title": r.get("title"), "status": r.get("status"),
            "rule": r.get("rule"), "budget_fen": r.get("budget_fen"), "closes_at": r.get("closes_at"),
            "ballots": r.get("ballots"), "turnout": r.get("turnout"), "my_ballot": r.get("my_ballot")}
    outcome = r.get("outcome") or {}
    explained = {e["project_id"]: e for e in outcome.get("explanations", [])}
    lang = "zh" if locale().startswith("zh") else "en"
    rows = [{"order": p["order"], "project_id": p["project_id"], "title": p["title"], "cost_fen": p["cost_fen"],
             **({"won": "✓" if explained[p["project_id"]]["won"] else "",
                 "approvals": explained[p["project_id"]]["approvals"],
                 "why": explained[p["project_id"]]["label"][lang]} if p["project_id"] in explained else {})}
            for p in r.get("proposals", [])]
    text = render_record(head) + "\n" + table(rows, max_cell=200 if outcome else 40)
    if outcome:
        text += f"\nspent {_yuan(outcome.get('spent_fen'))}, left {_yuan(outcome.get('leftover_fen'))}"
    return text


def render(command: str, result: Any) -> str:
    if command == "projects" and isinstance(result, dict):
        items = result.get("items", [])
        rows = [{**p, "stage": p.get("stage"), "cosigner_count": p.get("cosigner_count"),
                 "progress": f"{p.get('progress', 0)}%"} for p in items]
        text = table(rows, PROJECT_COLUMNS)
        total, page, per_page = result.get("total"), result.get("page", 1), result.get("per_page", len(items))
        if total is not None:
            shown = f"{(page - 1) * per_page + 1}–{(page - 1) * per_page + len(items)}" if items else "none"
            text += f"\n({shown} of {total}" + ("; --page N for more)" if total > page * per_page else ")")
        return text
    if command == "project" and isinstance(result, dict) and "project" in result:
        summary = _project_summary(result["project"])
        minutes = result.get("volunteer_minutes") or {}
        satisfaction = result.get("satisfaction") or {}
        summary["volunteer hours"] = minutes.get("hours", "-")
        if satisfaction:
            summary["satisfaction"] = f"score {satisfaction.get('score')} from {satisfaction.get('ratings')} ratings"
        if result.get("missing"):
            summary["missing"] = result["missing"]
        return render_record(summary)
    if command in ("propose", "cosign", "opinion", "open-vote", "vote", "close-vote") and isinstance(result, dict):
        return render_record(_project_summary(result))
    if command in ("round", "open-round", "approve", "close-round") and isinstance(result, dict):
        return _render_round(result)
    if command == "rounds" and isinstance(result, list):
        return table(result, ["round_id", "title", "status", "rule", "budget_fen", "proposals", "ballots",
                              "closes_at"]) if result else "no budgeting rounds"
    if command == "ranking" and isinstance(result, dict):
        head = (f"{result.get('community_id')} {result.get('kind')} ranking, period {result.get('period')}"
                f"{'' if result.get('published') else ' (provisional)'}")
        rows = table(result.get("ranked", []), ["rank", "subject_id", "name", "score", "average", "ratings",
                                                 "satisfaction_rate"])
        waiting = result.get("not_enough_ratings") or []
        tail = f"\nnot enough ratings yet: {len(waiting)}" if waiting else ""
        return f"{head}\n{rows}{tail}"
    if isinstance(result, dict):
        return render_record(result)
    if isinstance(result, list) and all(isinstance(r, dict) for r in result):
        return table(result)
    return _cell(result)


def _field(result: Any, name: str) -> Any:
    value = result
    for part in name.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise UsageError(f"the answer has no field {name!r}")
    return value


# -- errors -----------------------------------------------------------------------------------------

def _hint(error: ApiError, command: str) -> str:
    reason = error.reason
    if command == "login" and error.status == 401:
        return ""
    if reason in ("unauthenticated", "token_expired", "token_invalid") or (error.status == 401 and not reason):
        return " — cocreate login USERNAME"
    if reason == "no_users_file":
        return " — `make demo` writes the demo users"
    return ""


def error_line(error: ApiError, command: str, lang: str) -> str:
    if not isinstance(error.body, dict):
        return (f"{message('not_the_platform', lang)} ({error.status}; COCREATE_URL / GATEWAY_PORT)")
    if command == "login" and error.status == 401:
        text = message("signin_failed", lang)
    else:
        text = message_for_error(error.body, lang, error.status)
    if command == "login" and error.status == 401:
        return text
    detail = error.reason or error.status
    developer = error.body.get("message")
    details = (error.body.get("errors") or {}).get("details") if isinstance(error.body.get("errors"), dict) else None
    extra = f": {developer}" if developer else ""
    if isinstance(details, dict) and details:
        extra += " (" + "; ".join(f"{k}: {v}" for k, v in details.items()) + ")"
    return f"{text} [{detail}{extra}]{_hint(error, command)}"


def main(argv=None) -> int:
    """Run one command; the exit code (see the module's doc). Never a traceback for the platform
    being away, a refusal, a closed pipe or Ctrl-C."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (``cocreate projects | head -1``): it has what it wanted.
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        print("\ncocreate: " + message("interrupted", locale()), file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse: --help (0) or a usage error (2)
        sys.stdout.flush()
        return int(stop.code or 0)
    lang = locale()
    url = (args.url or default_url()).rstrip("/")
    as_json, field = getattr(args, "json", False), getattr(args, "field", None)
    token = args.token
    if token is None and args.command != "login" and token_file().exists():
        token = token_file().read_text().strip() or None
    client = Client(url, token, timeout=30.0, retries=2)
    try:
        result = run(args, client)
    except ApiError as error:
        if as_json:
            print(json.dumps(error.body, ensure_ascii=False, indent=2), file=sys.stderr)
        else:
            print(f"cocreate: {error_line(error, args.command, lang)}", file=sys.stderr)
        return EXIT_REFUSED
    except UsageError as error:
        print(f"cocreate {args.command}: {error} (see cocreate {args.command} --help)", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        print(f"cocreate: {message('platform_unreachable', lang)}: {url} ({reason}) — "
              f"make run; COCREATE_URL / GATEWAY_PORT", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ValueError:  # a 2xx answer that is not JSON: something else listens there
        print(f"cocreate: {message('not_the_platform', lang)}: {url} — COCREATE_URL / GATEWAY_PORT",
              file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        if field:
            value = _field(result, field)
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        elif as_json:
            text = json.dumps(result, ensure_ascii=False, indent=2)
        else:
            text = render(args.command, result)
    except UsageError as error:
        print(f"cocreate: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(text)
    sys.stdout.flush()
    return EXIT_OK


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
