"""The shape every service keeps (issue 14): commands as data with one handler each, module-level
routes that send them, and a domain that imports nothing but the standard library and the
stdlib-only domain kernel (:mod:`services.kernel.model`).

These tests read the code (its syntax tree, the routes its blueprints declare); they need no
database: the blueprints are registered on a bare Flask app.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import sys
from pathlib import Path

import pytest

from services.kernel.web import CommandSchema
from tests.support.apps import blueprints_app

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("projects", "volunteers", "feedback")
DOMAIN_KERNEL = "services.kernel.model"


# -- a pure domain -------------------------------------------------------------------------------

def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
            names.add(node.module)
    return names


def is_stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


def domain_modules(service: str) -> list[Path]:
    folder = ROOT / "services" / service
    return [folder / name for name in ("domain.py", "community.py", "commands.py", "budgeting.py", "rounds.py") if (folder / name).exists()]


@pytest.mark.parametrize("service", SERVICES)
def test_domain_modules_import_only_the_standard_library_and_the_domain_kernel(service):
    own = {f"services.{service}.{path.stem}" for path in domain_modules(service)}
    for path in domain_modules(service):
        foreign = {m for m in imports_of(path) if not is_stdlib(m) and m != DOMAIN_KERNEL and m not in own}
        assert foreign == set(), f"{path.relative_to(ROOT)} imports {sorted(foreign)}"


def test_the_domain_kernel_imports_only_the_standard_library():
    path = ROOT / "services" / "kernel" / "model.py"
    assert {m for m in imports_of(path) if not is_stdlib(m)} == set()


def test_the_import_contract_catches_a_foreign_import(tmp_path):
    """The check above can fail: a module importing SQLAlchemy or another kernel module is caught."""
    bad = tmp_path / "domain.py"
    bad.write_text("import json\nimport sqlalchemy as sa\nfrom services.kernel.aggregate import UnitOfWork\n"
                   "from services.kernel.model import Aggregate\n")
    assert {m for m in imports_of(bad) if not is_stdlib(m) and m != DOMAIN_KERNEL} == {
        "sqlalchemy", "services.kernel.aggregate"}


# -- module-level routes ---------------------------------------------------------------------------

MAX_FUNCTION_LINES = 40


def api_tree(service: str) -> ast.Module:
    path = ROOT / "services" / service / "api.py"
    return ast.parse(path.read_text(), str(path))


def functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


@pytest.mark.parametrize("service", SERVICES)
def test_api_modules_hold_no_lambda_and_no_nested_function(service):
    tree = api_tree(service)
    assert [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Lambda)] == []
    nested = [(outer.name, inner.name, inner.lineno) for outer in functions(tree)
              for inner in functions(outer) if inner is not outer]
    assert nested == []
    for node in tree.body:  # routes are module-level classes; functions are module-level too
        assert isinstance(node, (ast.Import, ast.ImportFrom, ast.ClassDef, ast.FunctionDef, ast.Assign,
                                 ast.AnnAssign, ast.Expr)), f"line {node.lineno}: {type(node).__name__}"


@pytest.mark.parametrize("service", SERVICES)
def test_no_function_of_an_api_module_is_long(service):
    long = [(f.name, f.lineno, f.end_lineno - f.lineno + 1) for f in functions(api_tree(service))
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


# -- commands as data, one handler each, and the route that sends each ------------------------------

def write_routes(service: str) -> dict[str, type | None]:
    """``"POST /path"`` -> the schema class of every write route of the service's blueprints."""
    app, _smorest = blueprints_app(service)
    routes = {}
    for rule in app.url_map.iter_rules():
        view_class = getattr(app.view_functions[rule.endpoint], "view_class", None)
        for method in sorted(rule.methods - {"GET", "HEAD", "OPTIONS"}):
            function = getattr(view_class, method.lower())
            parameters = getattr(function, "_apidoc", {}).get("arguments", {}).get("parameters", [])
            body = [p["schema"] for p in parameters if p.get("location", "json") == "json"]
            # the kernel's Blueprint builds a schema given as a class once: its class
            routes[f"{method} {rule.rule}"] = (body[0] if isinstance(body[0], type) else type(body[0])) if body else None
    return routes


def commands_of(service: str) -> set[type]:
    module = importlib.import_module(f"services.{service}.commands")
    return {value for value in vars(module).values()
            if isinstance(value, type) and value.__module__ == module.__name__ and dataclasses.is_dataclass(value)}


def handlers_of(service: str) -> dict[type, object]:
    handlers = importlib.import_module(f"services.{service}.handlers")
    if service == "feedback":  # its handlers are bound to the process's rating ids
        from services.feedback.ids import RatingIds

        return handlers.command_handlers({"rating_ids": RatingIds(b"k" * 32)})
    return handlers.HANDLERS


def _p():
    from services.projects import commands as c
    return {
        "POST /communities": c.RegisterCommunity,
        "POST /communities/<community_id>/grids": c.AddGrid,
        "PUT /communities/<community_id>/representatives": c.SetRepresentatives,
        "PATCH /communities/<community_id>/settings": c.ChangeSettings,
        "POST /communities/<community_id>/fund/credits": c.CreditFund,
        "POST /projects": c.ProposeProject,
        "POST /projects/<project_id>/cosignatures": c.CoSign,
        "POST /projects/<project_id>/opinions": c.PostOpinion,
        "POST /projects/<project_id>/amendments": c.AmendProposal,
        "POST /projects/<project_id>/withdrawal": c.WithdrawProposal,
        "POST /projects/<project_id>/vote/open": c.OpenVote,
        "POST /projects/<project_id>/vote/ballots": c.CastBallot,
        "POST /projects/<project_id>/vote/close": c.CloseVote,
        "POST /projects/<project_id>/pledges": c.PledgeContribution,
        "POST /projects/<project_id>/pledges/<pledge_id>/deliveries": c.ConfirmDelivery,
        "POST /projects/<project_id>/spending": c.RecordSpending,
        "POST /projects/<project_id>/milestones": c.RecordMilestone,
        "POST /projects/<project_id>/completion": c.CompleteProject,
        "POST /projects/<project_id>/maintainers": c.AssignMaintainer,
        "POST /projects/<project_id>/maintenance-logs": c.LogMaintenance,
        "POST /projects/<project_id>/problems": c.ReportProblem,
        "POST /projects/<project_id>/problems/<problem_id>/resolution": c.ResolveProblem,
        "POST /projects/<project_id>/evaluation/open": c.OpenEvaluation,
        "POST /projects/<project_id>/evaluation/ratings": c.RateProject,
        "POST /projects/<project_id>/evaluation/close": c.CloseEvaluation,
        "POST /projects/<project_id>/results": c.PublishResults,
        "POST /projects/<project_id>/rewards": c.PayReward,
        "POST /communities/<community_id>/rounds": c.OpenRound,
        "PUT /rounds/<round_id>/ballot": c.CastRoundBallot,
        "POST /rounds/<round_id>/close": c.CloseRound,
    }, {c.CloseDueRounds: "the close-due-rounds job"}


def _f():
    from services.feedback import commands as c
    return {
        "PATCH /policies/<community_id>": c.ChangePolicy,
        "POST /subjects": c.RegisterSubject,
        "POST /subjects/<subject_id>/ratings": c.SubmitRating,
        "POST /subjects/<subject_id>/flags/<flag_id>/review": c.ReviewFlag,
        "PATCH /ratings/<rating_id>": c.ReviseRating,
        "POST /ratings/<rating_id>/appeal": c.FileAppeal,
        "POST /ratings/<rating_id>/appeal/decision": c.DecideAppeal,
        "POST /cases/<case_id>/contacts": c.ContactResident,
        "POST /cases/<case_id>/rectifications": c.RecordRectification,
        "POST /cases/<case_id>/confirmation": c.ConfirmOutcome,
        "POST /rankings": c.PublishRanking,
        "POST /plans/<plan_id>/details": c.DrawUpPlan,
        "POST /plans/<plan_id>/notes": c.NoteProgress,
    }, {c.RecordProjectEvaluation: "the project-evaluation consumer", c.SweepOverdue: "the sweep-overdue job",
        c.CloseCasesOfExcludedRatings: "the sweep-overdue job"}


def _v():
    from services.volunteers import commands as c
    return {
        "POST /cards": c.RegisterCard, "PATCH /cards/<person_id>": c.CorrectCard,
        "POST /me/erasure": c.RequestErasure, "POST /erasures/<person_id>/confirmation": c.ConfirmErasure,
        "POST /activities": c.PublishActivity,
        "POST /activities/<activity_id>/cancellation": c.CancelActivity,
        "POST /activities/<activity_id>/signups": c.SignUp,
        "POST /activities/<activity_id>/signups/withdrawal": c.WithdrawSignUp,
        "POST /activities/<activity_id>/check-in": c.CheckIn,
        "POST /activities/<activity_id>/check-out": c.CheckOut,
        "POST /activities/<activity_id>/attendance": c.RecordAttendance,
        "POST /activities/<activity_id>/retroactive-entries": c.RecordRetroactiveEntry,
        "POST /activities/<activity_id>/claims/<person_id>/decision": c.DecideClaim,
        "POST /rewards": c.ListReward,
        "POST /rewards/<reward_id>/restock": c.RestockReward,
        "POST /rewards/<reward_id>/redemptions": c.RedeemReward,
        "POST /rewards/<reward_id>/redemptions/<redemption_id>/fulfilment": c.FulfilRedemption,
        "POST /certificates": c.IssueCertificate,
    }, {c.CreditProjectLabour: "the project-labour consumer", c.NoteFeedbackCase: "the feedback-cases consumer",
          c.ReapplyErasure: "the reapply-erasures command"}


# Per service: every write route and its command; the commands no route sends, and who does; and the
# write-method routes that are queries (they record nothing, so they send no command).
EXPECTED = {
    "feedback": (_f, set()),
    "projects": (_p, set()),
    "volunteers": (_v, {"POST /certificates/<number>/verification"}),
}


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_every_write_route_sends_its_command(service):
    table, queries = EXPECTED[service]
    by_route, elsewhere = table()
    routes = write_routes(service)
    assert set(routes) == set(by_route) | queries
    sent = {route: getattr(schema, "command", None) for route, schema in routes.items() if route not in queries}
    assert sent == by_route
    for route in by_route:
        assert issubclass(routes[route], CommandSchema), route
    for route in queries:
        assert not (routes[route] and issubclass(routes[route], CommandSchema)), route
    assert set(by_route.values()) | set(elsewhere) == commands_of(service)


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_every_command_is_a_frozen_dataclass_with_exactly_one_handler(service):
    commands = commands_of(service)
    handlers = handlers_of(service)
    assert commands, "no command found"
    for command in commands:
        assert command.__dataclass_params__.frozen, command.__name__
    assert set(handlers) == commands
    assert len(set(map(id, handlers.values()))) == len(handlers), "a handler serves two commands"
