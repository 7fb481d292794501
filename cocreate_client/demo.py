"""``make demo``: fill a running local platform with a realistic community, through the public
API only (the gateway on ``COCREATE_URL``, default http://127.0.0.1:8000).

It writes the users file the gateway's token endpoint reads (``COCREATE_USERS_FILE``, default
``var/users.json``; every demo user's password is ``demo``), signs everyone in, and builds the
community 新阳社区 (``xinyang``): grids, 9 representatives, 14 residents, a funded community fund;
projects in every stage — collecting co-signers, in deliberation, under a council vote,
共建 with pledges and deliveries, 共管 with a maintainer, 共评 with ratings, 共享 with results, and
one rejected by the council; a volunteer activity with approved hours; cadres rated by residents
with a bad rating followed up; and a provisional satisfaction ranking of this month.
Run it on a fresh platform (``make clean run``); it prints what it made.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import os
import secrets
import time
from pathlib import Path

from cocreate_client import ApiError, Client

C = "xinyang"
UNIT = {"unit_id": "xinyang-jwh", "name": "新阳社区居委会"}


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


def write_users(path: Path, users: list[dict]) -> None:
    hashed = password_hash("demo", iterations=20_000)  # demo-only: quick to check, same for everyone
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"users": [{**u, "password_hash": hashed} for u in users]}, ensure_ascii=False,
                               indent=1), encoding="utf-8")


def sign_in(url: str, users: list[dict]) -> dict[str, Client]:
    clients = {}
    for user in users:
        for attempt in range(20):  # the gateway may be starting still
            try:
                clients[user["username"]] = Client(url).login(user["username"], "demo")
                break
            except (ApiError, OSError):
                if attempt == 19:
                    raise
                time.sleep(0.5)
    return clients


def fill(url: str, users_file: Path) -> dict:
    users = people()
    write_users(users_file, users)
    u = sign_in(url, users)
    admin, chen, zhou, shegong = u["admin"], u["chen"], u["zhou"], u["shegong"]
    reps = [u[f"rep{i}"] for i in range(1, 10)]
    res = [u[f"res{i}"] for i in range(1, 15)]

    admin.post("/communities", {"community_id": C, "name": "新阳社区", "district": "海沧区",
                                "grids": [{"grid_id": "g1", "name": "第一网格"}, {"grid_id": "g2", "name": "第二网格"},
                                          {"grid_id": "g3", "name": "第三网格"}]})
    chen.request("PUT", f"/communities/{C}/representatives",
                 {"representatives": [{"person_id": f"rep{i}", "name": f"居民代表{i}"} for i in range(1, 10)]})
    chen.post(f"/communities/{C}/fund/credits", {"amount_fen": 50_000_000, "source": "government_allocation",
                                                 "reference": "海财〔2026〕18号 公服资金"})
    chen.post(f"/communities/{C}/fund/credits", {"amount_fen": 2_000_000, "source": "donation",
                                                 "reference": "新阳工业区企业捐赠"})

    def propose(proposer: Client, title, category, cost, requested, grid="g1", **extra) -> str:
        return proposer.propose(community_id=C, grid_id=grid, title=title, category=category,
                                description=extra.get("description", title), location=extra.get("location", "新阳社区"),
                                estimated_cost_fen=cost, requested_fen=requested)["project_id"]

    def qualify(pid, proposer_index):
        for person in [r for i, r in enumerate(res) if i != proposer_index][:6]:
            person.cosign(pid)

    def vote(pid, yes, no=0, abstain=0):
        chen.open_vote(pid, UNIT)
        for rep, choice in zip(reps, ["yes"] * yes + ["no"] * no + ["abstain"] * abstain):
            rep.ballot(pid, choice)
        return chen.close_vote(pid)

    made = {}
    made["collecting"] = propose(res[0], "小区加装电动车充电桩", "facilities", 3_000_000, 2_000_000, "g2")
    res[1].cosign(made["collecting"])
    made["deliberation"] = propose(res[2], "楼道加装扶手", "elderly_care", 1_200_000, 1_000_000)
    qualify(made["deliberation"], 2)
    res[9].opinion(made["deliberation"], "support", "老人上下楼更安全")
    res[10].opinion(made["deliberation"], "oppose", "先修电梯更好")
    made["voting"] = propose(res[3], "修建居民休闲活动室", "facilities", 8_000_000, 6_000_000, "g3")
    qualify(made["voting"], 3)
    chen.open_vote(made["voting"], UNIT)
    for rep in reps[:4]:
        rep.ballot(made["voting"], "yes")
    made["rejected"] = propose(res[4], "建设第二休闲活动室", "facilities", 9_000_000, 7_000_000, "g3")
    qualify(made["rejected"], 4)
    vote(made["rejected"], yes=2, no=6, abstain=1)

    def approved(title, category, cost, requested, proposer_index):
        pid = propose(res[proposer_index], title, category, cost, requested)
        qualify(pid, proposer_index)
        vote(pid, yes=7, no=1, abstain=1)
        return pid

    made["co_build"] = approved("背街小巷安装路灯", "safety", 9_000_000, 8_000_000, 5)
    pledge = res[6].pledge(made["co_build"], kind="labour", labour_minutes=240)
    zhou.deliver(made["co_build"], pledge, labour_minutes=180, note="挖沟埋线")
    money = chen.pledge(made["co_build"], kind="money", money_fen=500_000,
                        contributor={"contributor_id": "xy-factory", "name": "新阳电子厂", "type": "enterprise"})
    zhou.deliver(made["co_build"], money, money_fen=500_000)
    chen.command(made["co_build"], "milestones", {"progress": 40, "note": "线缆铺设完成"})

    def through_build(pid, labourer: Client):
        pledge_id = labourer.pledge(pid, kind="labour", labour_minutes=300)
        zhou.deliver(pid, pledge_id, labour_minutes=300, note="义务劳动")
        chen.command(pid, "spending", {"amount_fen": 800_000, "receipt_ref": "FP-2026-1107", "description": "材料款"})
        chen.command(pid, "milestones", {"progress": 100, "note": "全部完工"})
        chen.command(pid, "completion")
        chen.command(pid, "maintainers", {"maintainer_id": labourer_id(labourer), "name": "志愿维护队",
                                           "kind": "resident", "duty": "每周巡查", "rota": "每周六上午"})

    def labourer_id(client: Client) -> str:
        return client.whoami()["person_id"]

    made["co_manage"] = approved("老旧小区绿化改造", "environment", 2_000_000, 1_500_000, 7)
    through_build(made["co_manage"], res[7])
    res[8].command(made["co_manage"], "problems", {"description": "东侧花坛浇水管破裂"})

    made["co_evaluate"] = approved("社区警务室建设", "safety", 3_000_000, 2_500_000, 8)
    through_build(made["co_evaluate"], res[8])
    chen.command(made["co_evaluate"], "evaluation/open")
    for person, score in zip(res[:5], (5, 5, 4, 4, 2)):
        person.command(made["co_evaluate"], "evaluation/ratings", {"score": score, "comment": "警务室很实用"})

    made["co_share"] = approved("儿童游乐场翻新", "facilities", 2_500_000, 2_000_000, 9)
    through_build(made["co_share"], res[9])
    chen.command(made["co_share"], "evaluation/open")
    for person, score in zip(res[:6], (5, 5, 5, 4, 4, 3)):
        person.command(made["co_share"], "evaluation/ratings", {"score": score})
    chen.command(made["co_share"], "evaluation/close")
    chen.command(made["co_share"], "results", {"benefits": "200 多名儿童有了安全的游乐场"})

    # 义工卡: an activity yesterday with approved hours.
    for person in res[:8]:
        try:
            person.post("/cards", {})
        except ApiError as error:  # project labour already gave this resident a card
            if error.reason != "already_registered":
                raise
    start = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).replace(hour=1, minute=0, second=0,
                                                                              microsecond=0)
    activity = shegong.post("/activities", {
        "title": "敬老院陪伴活动", "community_id": C, "place": "海沧敬老院",
        "organiser": {"kind": "social_organisation", "id": "hc-sgz", "name": "海沧社工站"},
        "starts_at": start.isoformat(), "ends_at": (start + dt.timedelta(hours=4)).isoformat(),
        "capacity": 10, "planned_minutes": 180, "points_per_hour": 20})["created_id"]
    for person in res[:8]:
        person_id = person.whoami()["person_id"]
        shegong.post(f"/activities/{activity}/attendance", {"person_id": person_id})
        shegong.post(f"/activities/{activity}/claims/{person_id}/decision", {"decision": "approve"})
    chen.post("/rewards", {"name": "环保购物袋", "community_id": C, "cost_points": 40, "stock": 50})

    # 居民评价: cadres rated; a bad rating followed up; a provisional ranking of this month.
    chen.post("/subjects", {"subject_id": "chen", "kind": "cadre", "name": "陈书记", "community_id": C,
                            "person_id": "chen", "unit_id": UNIT["unit_id"]})
    chen.post("/subjects", {"subject_id": "lin", "kind": "cadre", "name": "林主任", "community_id": C,
                            "person_id": "lin", "unit_id": UNIT["unit_id"]})
    chen.post("/subjects", {"subject_id": "zhou", "kind": "grid_worker", "name": "周网格员", "community_id": C,
                            "person_id": "zhou", "unit_id": UNIT["unit_id"]})
    chen.request("PATCH", f"/policies/{C}", {"min_ratings": 5})
    for i, person in enumerate(res[:12]):
        person.rate("chen", 5 if i % 3 else 4, "办事热情")
        person.rate("lin", 2 if i == 0 else (4 if i % 2 else 3), "回复太慢" if i == 0 else "")
    case = chen.get("/cases", community_id=C, status="open")["items"][0]
    zhou.post(f"/cases/{case['case_id']}/contacts", {"channel": "phone", "note": "已电话回访，了解诉求"})
    zhou.post(f"/cases/{case['case_id']}/rectifications", {"actions": "设立每周三接待日，三日内答复"})
    period = chen.ranking(C)["period"]
    ranking = chen.post("/rankings", {"community_id": C, "kind": "cadre", "period": period, "provisional": True})
    made["ranking"] = {"period": period, "ranked": [(e["name"], e["score"]) for e in ranking["resource"]["ranked"]]}
    made["follow_up_case"] = case["case_id"]
    made["dashboard"] = {k: v for k, v in chen.dashboard(C).items() if k in ("projects", "fund", "missing")}
    return made


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cocreate_client.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("COCREATE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--users-file", default=os.environ.get("COCREATE_USERS_FILE") or
                        os.path.join(os.environ.get("COCREATE_DATA_DIR", "var"), "users.json"))
    args = parser.parse_args(argv)
    made = fill(args.url, Path(args.users_file))
    print(json.dumps(made, ensure_ascii=False, indent=2))
    web = os.environ.get("COCREATE_WEB_URL") or f"http://127.0.0.1:{os.environ.get('WEB_PORT', '8080')}"
    print(f"\nOpen {web}/c/{C} in a browser and sign in as any demo user (residents res1…res14, "
          f"representatives rep1…rep9, the cadre chen; password: demo).\nOr use the API, e.g.\n"
          f"  cocreate --url {args.url} login chen --password demo && cocreate dashboard {C}")


if __name__ == "__main__":
    main()
