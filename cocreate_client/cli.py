"""``cocreate`` — residents' and staff's actions and reports from a terminal, over the public API.

    cocreate login wang                       # asks for the password, keeps the token
    cocreate projects --community xinyang
    cocreate propose --community xinyang --grid g1 --title 安装路灯 --category safety \\
                     --description "背街小巷无照明" --location "永兴路 12 巷" --cost 9000000 --requested 8000000
    cocreate cosign <project_id>
    cocreate dashboard xinyang
    cocreate call GET /rankings/xinyang/cadre  # any route of the public API

The gateway's address comes from ``--url`` or ``COCREATE_URL`` (default http://127.0.0.1:8000);
the token from ``--token``, ``COCREATE_TOKEN`` or the file ``login`` writes
(``COCREATE_TOKEN_FILE``, default ~/.cocreate/token). Output is JSON.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from cocreate_client import ApiError, Client


def token_file() -> Path:
    return Path(os.environ.get("COCREATE_TOKEN_FILE") or Path.home() / ".cocreate" / "token")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cocreate", description="共同缔造: the public API from a terminal")
    parser.add_argument("--url", default=os.environ.get("COCREATE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("COCREATE_TOKEN"))
    sub = parser.add_subparsers(dest="command", required=True)

    login = sub.add_parser("login", help="get a token from the gateway's token endpoint and keep it")
    login.add_argument("username")
    login.add_argument("--password", help="default: asked for (or read from stdin when not a terminal)")
    sub.add_parser("whoami", help="who the kept token says you are")

    projects = sub.add_parser("projects", help="list projects")
    projects.add_argument("--community")
    projects.add_argument("--stage")
    projects.add_argument("--q", help="search in titles and descriptions")
    project = sub.add_parser("project", help="a project with its volunteer minutes and satisfaction score")
    project.add_argument("project_id")

    propose = sub.add_parser("propose", help="共谋: propose a project")
    for name in ("community", "grid", "title", "description", "category", "location"):
        propose.add_argument(f"--{name}", required=True)
    propose.add_argument("--cost", type=int, required=True, help="estimated cost in fen")
    propose.add_argument("--requested", type=int, required=True, help="amount requested from the fund in fen")
    cosign = sub.add_parser("cosign", help="co-sign a proposal")
    cosign.add_argument("project_id")
    opinion = sub.add_parser("opinion", help="post an opinion during deliberation")
    opinion.add_argument("project_id")
    opinion.add_argument("stance", choices=["support", "oppose", "neutral"])
    opinion.add_argument("text")
    open_vote = sub.add_parser("open-vote", help="open the council vote (cadre)")
    open_vote.add_argument("project_id")
    open_vote.add_argument("--unit-id")
    open_vote.add_argument("--unit-name")
    vote = sub.add_parser("vote", help="cast your ballot (representative)")
    vote.add_argument("project_id")
    vote.add_argument("choice", choices=["yes", "no", "abstain"])
    close_vote = sub.add_parser("close-vote", help="close the council vote (cadre)")
    close_vote.add_argument("project_id")
    pledge = sub.add_parser("pledge", help="共建: pledge labour (minutes) or money (fen)")
    pledge.add_argument("project_id")
    pledge.add_argument("--labour-minutes", type=int)
    pledge.add_argument("--money-fen", type=int)

    sub.add_parser("card", help="my volunteer card (义工卡)")
    rate = sub.add_parser("rate", help="rate a cadre, unit, service or project (1 非常不满意 … 5 非常满意)")
    rate.add_argument("subject_id")
    rate.add_argument("level", type=int, choices=range(1, 6))
    rate.add_argument("--comment", default="")
    ranking = sub.add_parser("ranking", help="a satisfaction ranking")
    ranking.add_argument("community_id")
    ranking.add_argument("--kind", default="cadre")
    ranking.add_argument("--period")
    dashboard = sub.add_parser("dashboard", help="a community's dashboard")
    dashboard.add_argument("community_id")
    dashboard.add_argument("--kind", default="cadre")
    sub.add_parser("me", help="my card, proposals, pledges, ratings and follow-ups")

    call = sub.add_parser("call", help="any route: cocreate call POST /projects/ID/opinions '{\"stance\": …}'")
    call.add_argument("method", choices=["GET", "POST", "PUT", "PATCH", "DELETE"])
    call.add_argument("path", help="below /api/v1, e.g. /rankings/xinyang/cadre")
    call.add_argument("body", nargs="?", help="JSON body")
    return parser


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
        return client.projects(community_id=args.community, stage=args.stage, q=args.q)
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
        unit = {"unit_id": args.unit_id, "name": args.unit_name} if args.unit_id else None
        return client.open_vote(args.project_id, unit)
    if c == "vote":
        return client.ballot(args.project_id, args.choice)
    if c == "close-vote":
        return client.close_vote(args.project_id)
    if c == "pledge":
        if args.labour_minutes:
            return client.pledge(args.project_id, kind="labour", labour_minutes=args.labour_minutes)
        return client.pledge(args.project_id, kind="money", money_fen=args.money_fen)
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
    body = json.loads(args.body) if args.body else None
    return client.request(args.method, args.path, body)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    token = args.token
    if token is None and args.command != "login" and token_file().exists():
        token = token_file().read_text().strip()
    client = Client(args.url, token)
    try:
        result = run(args, client)
    except ApiError as error:
        print(json.dumps(error.body, ensure_ascii=False, indent=2), file=sys.stderr)
        return 1
    except OSError as error:
        print(f"cannot reach the gateway at {args.url}: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
