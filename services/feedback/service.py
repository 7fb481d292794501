"""The feedback service's definition: what the kernel needs to run its API and workers."""

import dataclasses

import sqlalchemy as sa

from services.feedback import api, handlers, ids, views
from services.feedback.commands import CloseCasesOfExcludedRatings, RecordProjectEvaluation, SweepOverdue
from services.kernel.events import Metadata, to_micros
from services.kernel.metrics import QueryGauge
from services.kernel.service import ServiceDefinition, Subscription


# This consumer's side of its contract with the projects service: what ``record`` below reads of a
# ``ProjectRated`` event's data, with the types it needs (a dict is an object with those fields);
# the event's id and time come from its envelope. Optional fields may be absent (the project's id
# stands in for a missing title, an empty comment for a missing one). An event without a required
# field makes the handler raise, so the consumer dead-letters it.
# tests/integration/test_event_contracts.py holds the projects service's real events to this, and
# this to what the handler needs.
PROJECT_RATED_CONTRACT = {
    "event_type": "ProjectRated",
    "acted_on": None,  # every one
    "required": {"project_id": str, "community_id": str, "responsible_unit": {"unit_id": str, "name": str},
                 "person_id": str, "score": int},
    "optional": {"project_title": str, "comment": str},
}


def _project_evaluation_handlers(container):
    """A project evaluation (共评, ``ProjectRated``) becomes a rating of the project and of its
    responsible unit, once."""

    def record(connection, event) -> None:
        d = event.data
        # No actor: the rater is in the ratings' data (shown as the policy says), never in the
        # metadata of what the evaluation causes (a subject registered by a first evaluation is
        # public, and its actor would name the rater).
        metadata = dataclasses.replace(Metadata.caused_by(event), actor=None)
        command = RecordProjectEvaluation(
            event_id=event.event_id, rated_at=event.occurred_at, project_id=d["project_id"],
            project_title=d.get("project_title") or d["project_id"], community_id=d["community_id"],
            responsible_unit=d["responsible_unit"], person_id=d["person_id"], score=d["score"],
            comment=d.get("comment", ""))
        container.bus.handle(command, metadata=metadata, connection=connection)

    return {"ProjectRated": record}


def _sweep_overdue(container) -> str:
    """``python -m services.feedback sweep-overdue``: the periodic job that records open cases past
    their deadline as overdue (reads only show them so). First it closes the cases whose ratings
    were excluded while an exclusion did not yet close its case (stored before it did): after an
    upgrade its first run closes them, later runs find none."""
    metadata = Metadata(actor="system:overdue-sweep")
    closed = container.bus.handle(CloseCasesOfExcludedRatings(), metadata=metadata).result
    outcome = container.bus.handle(SweepOverdue(), metadata=metadata)
    report = f"feedback: {outcome.result} follow-up case(s) became overdue"
    return report + (f"; {closed} case(s) of excluded ratings closed" if closed else "")


def _collectors(container):
    t = views.CASES.table
    clock = container.bus.clock

    def cases(overdue_only: bool):
        def query(connection):
            where = [t.c.status == "open"]
            if overdue_only:  # past the deadline, whether or not the sweep has recorded it yet
                where.append(t.c.deadline_us <= to_micros(clock()))
            return connection.execute(sa.select(t.c.community_id, sa.func.count()).where(*where)
                                      .group_by(t.c.community_id)).all()
        return query

    engine = container.store.engine
    return [QueryGauge(engine, "cocreate_followups_open", "Open follow-up cases of bad ratings per community",
                       ["community"], cases(False)),
            QueryGauge(engine, "cocreate_followups_overdue", "Open follow-up cases past their deadline per community",
                       ["community"], cases(True))]


DEFINITION = ServiceDefinition(
    name="feedback",
    title="居民评价 feedback",
    description="Satisfaction ratings (非常满意 … 非常不满意), follow-up of bad ratings, appeals, rankings, "
                "support plans (帮扶).",
    projections=views.projections,
    blueprints=api.BLUEPRINTS,
    resources=ids.resources,
    command_handlers=handlers.command_handlers,
    subscriptions=(
        Subscription(group="feedback.project-evaluations", topics=("projects.events",),
                     handlers=_project_evaluation_handlers),
    ),
    commands={"sweep-overdue": ("record follow-up cases past their deadline as overdue (run it periodically)",
                                _sweep_overdue)},
    collectors=_collectors,
)
