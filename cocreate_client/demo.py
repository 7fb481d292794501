"""``make demo``: fill a running local platform with a realistic community, through the public
API only (the gateway at :func:`cocreate_client.default_url`: ``COCREATE_URL``, else
``http://127.0.0.1:${GATEWAY_PORT:-8000}``, where ``make run`` serves it).

It writes the users file the gateway's token endpoint reads (``COCREATE_USERS_FILE``, default
``$COCREATE_DATA_DIR/users.json``, i.e. ``var/users.json``; every demo user's password is ``demo``),
signs everyone in, and builds the community 新阳社区 (``xinyang``): grids, 9 representatives,
14 residents, a funded community fund; projects in every stage — collecting co-signers, in
deliberation, under a council vote, 共建 with pledges and deliveries, 共管 with a maintainer, 共评
with ratings, 共享 with results, and one rejected by the council; a volunteer activity with
approved hours; cadres rated by residents with a bad rating followed up; and a provisional
satisfaction ranking of this month.

It can run again: it finds what exists (the community, its projects by title, the activity,
reward, subjects, ratings, follow-up …) and adds only what is missing, so a second run adds nothing
and an interrupted run is finished by the next. It shows its progress on stderr and ends with what
it added and how to sign in (``--json``: the ids it made, as JSON on stdout). Exit codes as
``cocreate``'s: 0 done, 1 the API refused, 2 usage, 3 the platform cannot be reached.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from cocreate_client import ApiError, Client, default_url
from cocreate_client.messages import message, message_for_error

C = "xinyang"
UNIT = {"unit_id": "xinyang-jwh", "name": "新阳社区居委会"}
PASSWORD = "demo"
STEPS = 9


def people() -> list[dict]:
    users = [
        {"username": "admin", "person_id": "admin", "name": "平台管理员", "roles": ["admin"], "community": None},
        {"username": "chen", "person_id": "chen", "name": "陈书记", "roles": ["cadre"], "community": C},
        {"username": "lin", "person_id": "lin", "name": "林主任", "roles": ["cadre"], "community": C},
        {"username": "zhou", "person_id": "zhou", "name": "周网格员", "roles": ["grid_worker"], "community": C},
        {"username": "shegong", "person_id": "shegong", "name": "海沧社工站", "roles": ["organiser"], "community": C},
    ]
    users += [{"username": f"rep{i}", "person_id": f"rep{i}", "name": f"居民代表{i}",
               "roles": ["representative", "resident"], "community": C} for i in range(1, 10)]
    surnames = "王李张刘杨黄吴徐孙马朱胡郭何"
    users += [{"username": f"res{i}", "person_id": f"res{i}", "name": f"{surnames[i - 1]}阿姨" if i % 2 else
               f"{surnames[i - 1]}师傅", "roles": ["resident"], "community": C} for i in range(1, 15)]
    return users


def password_hash(password: str, iterations: int) -> str:
    """A ``password_hash`` of the gateway's users file: PBKDF2-SHA256 as
    ``pbkdf2_sha256$<iterations>$<salt>$<digest>`` (base64). The client writes the file's format
    itself rather than importing the gateway (``python -m gateway hash-password`` makes the same)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _hash_is(stored: object, password: str) -> bool:
    try:
        scheme, iterations, salt, digest = str(stored).split("$")
        if scheme != "pbkdf2_sha256":
            return False
        mine = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
        return hmac.compare_digest(mine, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


def write_users(path: Path, users: list[dict]) -> None:
    """Write a users file of exactly these users, each with the password ``demo``."""
    hashed = password_hash(PASSWORD, iterations=20_000)  # demo-only: quick to check, same for everyone
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"users": [{**u, "password_hash": hashed} for u in users]}, ensure_ascii=False,
                               indent=1), encoding="utf-8")


def ensure_users(path: Path, users: list[dict]) -> int:
    """The demo users in the users file, with the password ``demo``; other users in the file are
    kept. The number of demo users added or corrected (0: the file is left as it was)."""
    try:
        existing = json.loads(path.read_text(encoding="utf-8")).get("users", [])
        existing = [u for u in existing if isinstance(u, dict)]
    except (OSError, ValueError, AttributeError):
        existing = []
    by_name = {u.get("username"): u for u in existing}
    stale = [u for u in users if not (by_name.get(u["username"]) is not None
                                      and {k: by_name[u["username"]].get(k) for k in u} == u
                                      and _hash_is(by_name[u["username"]].get("password_hash"), PASSWORD))]
    if not stale:
        return 0
    hashed = password_hash(PASSWORD, iterations=20_000)
    ours = {u["username"] for u in users}
    merged = [u for u in existing if u.get("username") not in ours]
    merged += [{**u, "password_hash": hashed} for u in users]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"users": merged}, ensure_ascii=False, indent=1), encoding="utf-8")
    return len(stale)


# -- reaching the platform ------------------------------------------------------------------------

class Unreachable(Exception):
    """The platform does not answer at the URL (exit code 3)."""


class NotReady(Exception):
    """The platform answers but did not become ready in time (exit code 3)."""


class SignInFailed(Exception):
    """The gateway refused the demo users' password (exit code 1)."""


def wait_until_ready(url: str, say: Callable[[str], None], timeout: float = 120.0) -> None:
    """Return once the gateway's ``/readyz`` says ready. Nothing listening at ``url`` is
    :class:`Unreachable` at once (no waiting on a platform that is not running); a gateway still
    starting (503) is waited for up to ``timeout`` seconds, with a line every 10 s."""
    started = time.monotonic()
    last_said = None
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5):
                return
        except urllib.error.HTTPError as error:
            if error.code != 503:
                return  # not the gateway's own readyz (e.g. behind a proxy): signing in tells
            why = "starting"
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, (ConnectionRefusedError, OSError)) and not isinstance(reason, TimeoutError):
                raise Unreachable(f"{url} ({reason})") from None
            why = str(reason)
        waited = time.monotonic() - started
        if waited > timeout:
            raise NotReady(f"{url} not ready after {timeout:.0f} s ({why})")
        if last_said is None or waited - last_said >= 10:
            say(f"  waiting for the platform at {url} to be ready ({why}, {waited:.0f} s)…")
            last_said = waited
        time.sleep(0.5)


def sign_in(url: str, users: list[dict], users_file: Path | None = None) -> dict[str, Client]:
    clients = {}
    for user in users:
        try:
            # a bulk loader: it waits as long as the gateway's rate limit says (a minute at most)
            clients[user["username"]] = Client(url, longest_wait=61.0).login(user["username"], PASSWORD)
        except ApiError as error:
            if error.status in (401, 404):
                where = f" {users_file}" if users_file else ""
                raise SignInFailed(
                    f"the gateway at {url} refused {user['username']}/{PASSWORD} ({error.reason or error.status}): "
                    f"is it reading the users file{where}? (COCREATE_USERS_FILE, COCREATE_DATA_DIR)") from None
            raise
    return clients


# -- the community ----------------------------------------------------------------------------------

# The demo's projects: key in ``made`` -> (title, category, cost, requested, grid, proposer index).
PROJECTS = {
    "collecting": ("小区加装电动车充电桩", "facilities", 3_000_000, 2_000_000, "g2", 0),
    "deliberation": ("楼道加装扶手", "elderly_care", 1_200_000, 1_000_000, "g1", 2),
    "voting": ("修建居民休闲活动室", "facilities", 8_000_000, 6_000_000, "g3", 3),
    "rejected": ("建设第二休闲活动室", "facilities", 9_000_000, 7_000_000, "g3", 4),
    "co_build": ("背街小巷安装路灯", "safety", 9_000_000, 8_000_000, "g1", 5),
    "co_manage": ("老旧小区绿化改造", "environment", 2_000_000, 1_500_000, "g1", 7),
    "co_evaluate": ("社区警务室建设", "safety", 3_000_000, 2_500_000, "g1", 8),
    "co_share": ("儿童游乐场翻新", "facilities", 2_500_000, 2_000_000, "g1", 9),
}
# The demo's participatory budgeting round (open, with ballots): its proposals as above (the cost is
# what each asks of the fund), and which of them residents res1 … res8 approve.
ROUND_TITLE = "2027 年度社区微更新（参与式预算）"
ROUND_BUDGET_FEN = 3_000_000
ROUND_PROPOSALS = {
    "round_books": ("社区书屋添置书架", "culture", 1_500_000, 1_500_000, "g2", 10),
    "round_seats": ("老年食堂增设座椅", "elderly_care", 1_200_000, 1_200_000, "g3", 11),
    "round_court": ("篮球场围网修补", "facilities", 900_000, 900_000, "g1", 12),
}
ROUND_BALLOTS = (("round_books", "round_seats"), ("round_books",), ("round_books", "round_court"), ("round_seats",),
                 ("round_seats", "round_court"), ("round_court",), ("round_books",), ())


class _Filler:
    def __init__(self, url: str, users_file: Path, say: Callable[[str], None]) -> None:
        self.url, self.users_file, self.say = url, users_file, say
        self.added: list[str] = []
        self.step = 0

    def begin(self, what: str) -> None:
        self.step += 1
        self.say(f"[{self.step}/{STEPS}] {what}")

    def added_one(self, what: str) -> None:
        self.added.append(what)

    def tolerate(self, call: Callable[[], object], *reasons: str) -> bool:
        """Run a write; False when the API says it was done already (one of ``reasons``)."""
        try:
            call()
            return True
        except ApiError as error:
            if error.reason in reasons:
                return False
            raise

    # -- the run ------------------------------------------------------------------------------

    def fill(self) -> dict:
        users = people()
        self.begin(f"users file {self.users_file}")
        written = ensure_users(self.users_file, users)
        if written:
            self.added_one(f"{written} demo users in {self.users_file}")
        self.say(f"      {written} demo users written" if written else f"      all {len(users)} demo users there")
        self.begin(f"signing in {len(users)} demo users")
        u = sign_in(self.url, users, self.users_file)
        self.u = u
        self.chen, self.zhou, self.shegong = u["chen"], u["zhou"], u["shegong"]
        self.reps = [u[f"rep{i}"] for i in range(1, 10)]
        self.res = [u[f"res{i}"] for i in range(1, 15)]

        self.begin("community 新阳社区 (xinyang), its representatives and fund")
        before = len(self.added)
        self.community(u["admin"])
        self._said_step(before)

        made: dict = {}
        self.begin(f"{len(PROJECTS)} projects in every stage")
        existing = self.existing_projects()
        for key, (title, category, cost, requested, grid, proposer) in PROJECTS.items():
            before = len(self.added)
            pid = made[key] = self.project(existing, title, category, cost, requested, grid, proposer)
            getattr(self, f"project_{key}")(pid, proposer)
            stage = self.detail(pid)
            state = f"{stage['stage']}/{stage['phase']}"
            done = len(self.added) - before
            self.say(f"      {title}: {state}" + (f" ({done} added)" if done else " (was there)"))

        self.begin("a participatory budgeting round with residents' ballots")
        before = len(self.added)
        made["round"] = self.budgeting_round(existing)
        self._said_step(before)

        self.begin("volunteer cards, an activity with approved hours, a reward")
        before = len(self.added)
        self.volunteering()
        self._said_step(before)

        self.begin("residents rate the cadres")
        before = len(self.added)
        self.ratings()
        self._said_step(before)

        self.begin("a bad rating followed up")
        before = len(self.added)
        made["follow_up_case"] = self.follow_up()
        self._said_step(before)

        self.begin("this month's provisional ranking and the dashboard")
        before = len(self.added)
        made["ranking"] = self.ranking()
        made["dashboard"] = {k: v for k, v in self.chen.dashboard(C).items() if k in ("projects", "fund", "missing")}
        self._said_step(before)
        made["added"] = list(self.added)
        return made

    def _said_step(self, before: int) -> None:
        done = len(self.added) - before
        self.say(f"      {done} added" if done else "      all there")

    # -- community ------------------------------------------------------------------------------

    def community(self, admin: Client) -> None:
        try:
            community = self.chen.get(f"/communities/{C}")
        except ApiError as error:
            if error.status != 404:
                raise
            admin.post("/communities", {"community_id": C, "name": "新阳社区", "district": "海沧区",
                                        "grids": [{"grid_id": "g1", "name": "第一网格"},
                                                  {"grid_id": "g2", "name": "第二网格"},
                                                  {"grid_id": "g3", "name": "第三网格"}]})
            self.added_one("community 新阳社区")
            community = self.chen.get(f"/communities/{C}")
        wanted = [{"person_id": f"rep{i}", "name": f"居民代表{i}"} for i in range(1, 10)]
        have = {(r.get("person_id"), r.get("name")) for r in community.get("representatives") or []}
        if have != {(r["person_id"], r["name"]) for r in wanted}:
            self.chen.request("PUT", f"/communities/{C}/representatives", {"representatives": wanted})
            self.added_one("9 representatives")
        ledger = self.chen.get(f"/communities/{C}/fund").get("ledger") or []
        credited = " ".join(entry.get("detail") or "" for entry in ledger if entry.get("kind") == "credit")
        for amount, source, reference in ((50_000_000, "government_allocation", "海财〔2026〕18号 公服资金"),
                                          (2_000_000, "donation", "新阳工业区企业捐赠")):
            if reference not in credited:
                self.chen.post(f"/communities/{C}/fund/credits", {"amount_fen": amount, "source": source,
                                                                  "reference": reference})
                self.added_one(f"fund credit {reference}")

    # -- projects -------------------------------------------------------------------------------

    def existing_projects(self) -> dict[str, str]:
        found, page = {}, 1
        while True:
            answer = self.chen.projects(community_id=C, per_page=100, page=page)
            for item in answer.get("items", []):
                found.setdefault(item["title"], item["project_id"])
            if page * answer.get("per_page", 100) >= answer.get("total", 0) or not answer.get("items"):
                return found
            page += 1

    def project(self, existing: dict[str, str], title: str, category: str, cost: int, requested: int, grid: str,
                proposer: int) -> str:
        """The demo's project of this title: the one there, else proposed now by resident ``proposer``."""
        pid = existing.get(title)
        if pid is None:
            pid = self.res[proposer].propose(community_id=C, grid_id=grid, title=title, category=category,
                                             description=title, location="新阳社区", estimated_cost_fen=cost,
                                             requested_fen=requested)["project_id"]
            self.added_one(f"project {title}")
        return pid

    def detail(self, pid: str) -> dict:
        return self.chen.get(f"/projects/{pid}")

    def cosign(self, pid: str, people: list[Client], ids: list[str]) -> None:
        p = self.detail(pid)
        have = {c["person_id"] for c in p.get("cosigners") or []}
        for person, person_id in zip(people, ids):
            if person_id not in have and p["phase"] in ("collecting_cosigners", "deliberation"):
                if self.tolerate(lambda: person.cosign(pid), "already_cosigned"):
                    self.added_one(f"co-signature of {person_id}")

    def qualify(self, pid: str, proposer: int) -> None:
        others = [i for i in range(len(self.res)) if i != proposer][:6]
        self.cosign(pid, [self.res[i] for i in others], [f"res{i + 1}" for i in others])

    def opinion(self, pid: str, index: int, stance: str, text: str) -> None:
        p = self.detail(pid)
        person_id = f"res{index + 1}"
        if p["phase"] == "deliberation" and not any(o.get("person_id") == person_id and o.get("text") == text
                                                    for o in p.get("opinions") or []):
            self.res[index].opinion(pid, stance, text)
            self.added_one(f"opinion of {person_id}")

    def vote(self, pid: str, yes: int, no: int = 0, abstain: int = 0, close: bool = True) -> None:
        p = self.detail(pid)
        if p["phase"] == "deliberation":
            self.chen.open_vote(pid, UNIT)
            self.added_one("council vote opened")
            p = self.detail(pid)
        if p["phase"] != "voting":
            return
        choices = ["yes"] * yes + ["no"] * no + ["abstain"] * abstain
        if (p.get("vote") or {}).get("ballots_cast", 0) < len(choices):
            for index, (rep, choice) in enumerate(zip(self.reps, choices)):
                if self.tolerate(lambda: rep.ballot(pid, choice), "already_voted"):
                    self.added_one(f"ballot of rep{index + 1}")
        if close:
            self.chen.close_vote(pid)
            self.added_one("council vote closed")

    def approve(self, pid: str, proposer: int) -> None:
        self.qualify(pid, proposer)
        self.vote(pid, yes=7, no=1, abstain=1)

    def pledge(self, pid: str, by: Client, contributor_id: str, kind: str, amount: int, deliver: int,
               note: str | None = None, contributor: dict | None = None) -> None:
        field = "labour_minutes" if kind == "labour" else "money_fen"
        p = self.detail(pid)
        pledge = next((x for x in p.get("pledges") or [] if x.get("contributor_id") == contributor_id
                       and x.get("kind") == kind), None)
        if pledge is None:
            if p["phase"] != "building":
                return
            extra = {"contributor": contributor} if contributor else {}
            pledge_id = by.pledge(pid, kind=kind, **{field: amount}, **extra)
            self.added_one(f"{kind} pledge of {contributor_id}")
            delivered = 0
        else:
            pledge_id, delivered = pledge["pledge_id"], (pledge.get("delivered") or {}).get(field, 0)
        if delivered < deliver:
            self.zhou.deliver(pid, pledge_id, **{field: deliver - delivered}, **({"note": note} if note else {}))
            self.added_one(f"delivery of {contributor_id}")

    def milestone(self, pid: str, progress: int, note: str) -> None:
        p = self.detail(pid)
        if p["phase"] == "building" and (p.get("progress") or 0) < progress:
            self.chen.command(pid, "milestones", {"progress": progress, "note": note})
            self.added_one(f"milestone {progress}%")

    def through_build(self, pid: str, labourer: int) -> None:
        person_id = f"res{labourer + 1}"
        self.pledge(pid, self.res[labourer], person_id, "labour", 300, 300, note="义务劳动")
        p = self.detail(pid)
        receipts = {s.get("receipt_ref") for s in p.get("spending") or []}
        if p["phase"] == "building" and "FP-2026-1107" not in receipts:
            self.chen.command(pid, "spending", {"amount_fen": 800_000, "receipt_ref": "FP-2026-1107",
                                                "description": "材料款"})
            self.added_one("spending")
        self.milestone(pid, 100, "全部完工")
        if self.detail(pid)["phase"] == "building":
            self.chen.command(pid, "completion")
            self.added_one("completion")
        p = self.detail(pid)
        if not any(m.get("maintainer_id") == person_id for m in p.get("maintainers") or []):
            self.chen.command(pid, "maintainers", {"maintainer_id": person_id, "name": "志愿维护队",
                                                   "kind": "resident", "duty": "每周巡查", "rota": "每周六上午"})
            self.added_one("maintainer")

    def evaluate(self, pid: str, scores: tuple[int, ...], comment: str | None, close: bool) -> None:
        p = self.detail(pid)
        if p.get("evaluation") is None and p["phase"] == "maintaining":
            self.chen.command(pid, "evaluation/open")
            self.added_one("evaluation opened")
            p = self.detail(pid)
        if p["phase"] != "evaluating":
            return
        if (p.get("evaluation") or {}).get("ratings", 0) < len(scores):
            for index, (person, score) in enumerate(zip(self.res, scores)):
                body = {"score": score, **({"comment": comment} if comment else {})}
                if self.tolerate(lambda: person.command(pid, "evaluation/ratings", body), "already_rated"):
                    self.added_one(f"evaluation of res{index + 1}")
        if close:
            self.chen.command(pid, "evaluation/close")
            self.added_one("evaluation closed")

    def budgeting_round(self, existing: dict[str, str]) -> str:
        """An open round (mes, closing in 30 days) of three qualified proposals, with eight ballots."""
        found = [r for r in self.chen.rounds(C) if r["title"] == ROUND_TITLE]
        if found:
            round_id = found[0]["round_id"]
        else:
            ids = []
            for title, category, cost, requested, grid, proposer in ROUND_PROPOSALS.values():
                pid = self.project(existing, title, category, cost, requested, grid, proposer)
                self.qualify(pid, proposer)
                ids.append(pid)
            closes = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)).replace(microsecond=0)
            round_id = self.chen.open_round(C, title=ROUND_TITLE, budget_fen=ROUND_BUDGET_FEN, rule="mes",
                                            project_ids=ids, closes_at=closes.isoformat(), max_approvals=2,
                                            electorate_size=len(self.res))["round_id"]
            self.added_one(f"budgeting round {ROUND_TITLE}")
        state = self.chen.budget_round(round_id)
        if state["status"] != "open":  # closed since (by its cadre): its ballots are what they were
            return round_id
        proposals = {p["title"]: p["project_id"] for p in state["proposals"]}
        by_key = {key: proposals.get(spec[0]) for key, spec in ROUND_PROPOSALS.items()}
        for resident, keys in zip(self.res, ROUND_BALLOTS):
            if resident.budget_round(round_id).get("my_ballot") is None:
                resident.approve(round_id, [by_key[k] for k in keys if by_key[k]])
                self.added_one("a ballot in the budgeting round")
        return round_id

    def project_collecting(self, pid: str, proposer: int) -> None:
        self.cosign(pid, [self.res[1]], ["res2"])

    def project_deliberation(self, pid: str, proposer: int) -> None:
        self.qualify(pid, proposer)
        self.opinion(pid, 9, "support", "老人上下楼更安全")
        self.opinion(pid, 10, "oppose", "先修电梯更好")

    def project_voting(self, pid: str, proposer: int) -> None:
        self.qualify(pid, proposer)
        self.vote(pid, yes=4, close=False)

    def project_rejected(self, pid: str, proposer: int) -> None:
        self.qualify(pid, proposer)
        self.vote(pid, yes=2, no=6, abstain=1)

    def project_co_build(self, pid: str, proposer: int) -> None:
        self.approve(pid, proposer)
        self.pledge(pid, self.res[6], "res7", "labour", 240, 180, note="挖沟埋线")
        self.pledge(pid, self.chen, "xy-factory", "money", 500_000, 500_000,
                    contributor={"contributor_id": "xy-factory", "name": "新阳电子厂", "type": "enterprise"})
        self.milestone(pid, 40, "线缆铺设完成")

    def project_co_manage(self, pid: str, proposer: int) -> None:
        self.approve(pid, proposer)
        self.through_build(pid, 7)
        p = self.detail(pid)
        if not any(x.get("description") == "东侧花坛浇水管破裂" for x in p.get("problems") or []):
            self.res[8].command(pid, "problems", {"description": "东侧花坛浇水管破裂"})
            self.added_one("problem report")

    def project_co_evaluate(self, pid: str, proposer: int) -> None:
        self.approve(pid, proposer)
        self.through_build(pid, 8)
        self.evaluate(pid, (5, 5, 4, 4, 2), "警务室很实用", close=False)

    def project_co_share(self, pid: str, proposer: int) -> None:
        self.approve(pid, proposer)
        self.through_build(pid, 9)
        self.evaluate(pid, (5, 5, 5, 4, 4, 3), None, close=True)
        p = self.detail(pid)
        if p["phase"] == "results_pending":
            self.chen.command(pid, "results", {"benefits": "200 多名儿童有了安全的游乐场"})
            self.added_one("results")

    # -- volunteers, ratings, follow-ups --------------------------------------------------------

    def volunteering(self) -> None:
        for index, person in enumerate(self.res[:8]):
            if self.tolerate(lambda: person.post("/cards", {}), "already_registered"):
                self.added_one(f"volunteer card of res{index + 1}")
        title = "敬老院陪伴活动"
        activities = self.shegong.get("/activities", community_id=C).get("items") or []
        activity = next((a["activity_id"] for a in activities if a.get("title") == title), None)
        if activity is None:
            start = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).replace(hour=1, minute=0, second=0,
                                                                                      microsecond=0)
            activity = self.shegong.post("/activities", {
                "title": title, "community_id": C, "place": "海沧敬老院",
                "organiser": {"kind": "social_organisation", "id": "hc-sgz", "name": "海沧社工站"},
                "starts_at": start.isoformat(), "ends_at": (start + dt.timedelta(hours=4)).isoformat(),
                "capacity": 10, "planned_minutes": 180, "points_per_hour": 20})["created_id"]
            self.added_one(f"activity {title}")
        for index in range(8):
            person_id = f"res{index + 1}"
            if self.tolerate(lambda: self.shegong.post(f"/activities/{activity}/attendance", {"person_id": person_id}),
                             "already_recorded"):
                self.added_one(f"attendance of {person_id}")
            if self.tolerate(lambda: self.shegong.post(f"/activities/{activity}/claims/{person_id}/decision",
                                                       {"decision": "approve"}), "already_decided"):
                self.added_one(f"approved hours of {person_id}")
        rewards = self.chen.get("/rewards", community_id=C).get("items") or []
        if not any(r.get("name") == "环保购物袋" for r in rewards):
            self.chen.post("/rewards", {"name": "环保购物袋", "community_id": C, "cost_points": 40, "stock": 50})
            self.added_one("reward 环保购物袋")

    def ratings(self) -> None:
        for subject_id, kind, name in (("chen", "cadre", "陈书记"), ("lin", "cadre", "林主任"),
                                       ("zhou", "grid_worker", "周网格员")):
            body = {"subject_id": subject_id, "kind": kind, "name": name, "community_id": C,
                    "person_id": subject_id, "unit_id": UNIT["unit_id"]}
            if self.tolerate(lambda: self.chen.post("/subjects", body), "already_registered"):
                self.added_one(f"subject {name}")
        if self.chen.get(f"/policies/{C}").get("settings", {}).get("min_ratings") != 5:
            self.chen.request("PATCH", f"/policies/{C}", {"min_ratings": 5})
            self.added_one("rating policy")
        period = self.chen.ranking(C)["period"]
        for i, person in enumerate(self.res[:12]):
            mine = person.get("/me/ratings").get("items") or []
            rated = {r.get("subject_id") for r in mine if r.get("period") == period}
            if "chen" not in rated:
                person.rate("chen", 5 if i % 3 else 4, "办事热情")
                self.added_one(f"rating of chen by res{i + 1}")
            if "lin" not in rated:
                person.rate("lin", 2 if i == 0 else (4 if i % 2 else 3), "回复太慢" if i == 0 else "")
                self.added_one(f"rating of lin by res{i + 1}")

    def follow_up(self) -> str:
        cases = self.chen.get("/cases", community_id=C, per_page=100).get("items") or []
        case = next(c for c in cases if c.get("subject_id") == "lin" and c.get("person_id") == "res1")
        if not case.get("contacts"):
            self.zhou.post(f"/cases/{case['case_id']}/contacts", {"channel": "phone", "note": "已电话回访，了解诉求"})
            self.added_one("follow-up call")
        if not case.get("rectifications"):
            self.zhou.post(f"/cases/{case['case_id']}/rectifications", {"actions": "设立每周三接待日，三日内答复"})
            self.added_one("rectification")
        return case["case_id"]

    def ranking(self) -> dict:
        period = self.chen.ranking(C)["period"]
        body = {"community_id": C, "kind": "cadre", "period": period, "provisional": True}
        if self.tolerate(lambda: self.chen.post("/rankings", body), "no_change"):
            self.added_one("provisional ranking")
        ranking = self.chen.ranking(C, period=period)
        return {"period": period, "ranked": [(e["name"], e["score"]) for e in ranking["ranked"]]}


def fill(url: str, users_file: Path, progress: Callable[[str], None] | None = None) -> dict:
    """Fill the platform at ``url`` with the demo community, adding only what is missing. Returns
    the ids it made or found (``collecting``, ``deliberation``, ``voting``, ``rejected``, ``co_build``,
    ``co_manage``, ``co_evaluate``, ``co_share``: project ids; ``follow_up_case``; ``ranking``;
    ``dashboard``) and ``added``: what this run added (empty when everything was there).
    ``progress`` receives a line per step (default: silent). The platform must be ready."""
    return _Filler(url.rstrip("/"), Path(users_file), progress or (lambda _line: None)).fill()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="make demo", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fill the running platform (`make run` in another terminal) with the demo community 新阳社区, "
                    "through the gateway only. Run it again to add what is missing.",
        epilog="exit codes: 0 done, 1 the API refused, 2 usage, 3 the platform cannot be reached\n"
               "(also: python -m cocreate_client.demo [--url URL] [--users-file PATH] [--json])")
    parser.add_argument("--url", default=None,
                        help=f"the gateway (default: COCREATE_URL, else http://127.0.0.1:${{GATEWAY_PORT:-8000}}; "
                             f"now {default_url()})")
    parser.add_argument("--users-file", default=os.environ.get("COCREATE_USERS_FILE") or
                        os.path.join(os.environ.get("COCREATE_DATA_DIR", "var"), "users.json"),
                        help="the users file the gateway reads (default: COCREATE_USERS_FILE, else "
                             "$COCREATE_DATA_DIR/users.json, else var/users.json)")
    parser.add_argument("--json", action="store_true", help="print the ids it made or found as JSON on stdout")
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return int(stop.code or 0)
    from cocreate_client.cli import locale

    lang = locale()
    url = (args.url or default_url()).rstrip("/")

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.monotonic()
    try:
        say(f"共同缔造 demo: filling {url} (users file {args.users_file})")
        wait_until_ready(url, say)
        made = fill(url, Path(args.users_file), say)
    except (Unreachable, NotReady) as error:
        key = "platform_unreachable" if isinstance(error, Unreachable) else "platform_not_ready"
        say(f"make demo: {message(key, lang)}: {error} — start it with `make run` in another terminal "
            f"(COCREATE_URL / GATEWAY_PORT say where it is)")
        return 3
    except SignInFailed as error:
        say(f"make demo: {message('signin_failed', lang)}: {error}")
        return 1
    except ApiError as error:
        detail = error.body.get("message") if isinstance(error.body, dict) else str(error.body)[:200]
        say(f"make demo: {message_for_error(error.body, lang, error.status)} "
            f"[{error.reason or error.status}: {detail}]")
        return 1
    except (OSError, ValueError) as error:
        say(f"make demo: {message('platform_unreachable', lang)}: {url} ({error})")
        return 3
    except KeyboardInterrupt:
        say(f"\nmake demo: {message('interrupted', lang)} — run it again to finish")
        return 130
    seconds = time.monotonic() - started
    try:
        if args.json:
            print(json.dumps(made, ensure_ascii=False, indent=2))
        else:
            print(summary(made, url, seconds))
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def summary(made: dict, url: str, seconds: float) -> str:
    added = made["added"]
    per_stage = made["dashboard"]["projects"]["per_stage"]
    stages = ", ".join(f"{stage} {n}" for stage, n in per_stage.items() if n)
    if added:
        projects = sum(1 for a in added if a.startswith("project "))
        parts = (["the community"] if "community 新阳社区" in added else []) + \
            ([f"{projects} project{'s' if projects != 1 else ''}"] if projects else [])
        others = len(added) - projects - (1 if "community 新阳社区" in added else 0)
        parts.append(f"{others} other record{'s' if others != 1 else ''} (users, co-signatures, votes, pledges, "
                     f"hours, ratings …)")
        listed = (", ".join(parts[:-1]) + " and " if len(parts) > 1 else "") + parts[-1]
        head = f"Done in {seconds:.1f} s: added {listed}"
    else:
        head = f"Done in {seconds:.1f} s: everything was there already; nothing added"
    web = os.environ.get("COCREATE_WEB_URL") or f"http://127.0.0.1:{os.environ.get('WEB_PORT', '8080')}"
    ranked = ", ".join(f"{name} {score}" for name, score in made["ranking"]["ranked"])
    return "\n".join([
        head,
        f"  community 新阳社区 ({C}): {sum(per_stage.values())} projects ({stages})",
        f"  fund balance ¥{made['dashboard']['fund']['balance_fen'] / 100:,.2f}; "
        f"cadre ranking {made['ranking']['period']}: {ranked}",
        "",
        f"Sign in at {web}/c/{C} (the web client) as a resident res1 … res14, a representative rep1 … rep9 or the",
        "cadre chen — every password is demo. Or from a terminal (cocreate: `make cli` puts it on PATH):",
        "  cocreate login chen --password demo",
        f"  cocreate dashboard {C}",
    ])


if __name__ == "__main__":
    raise SystemExit(main())
