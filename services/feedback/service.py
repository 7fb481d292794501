"""The feedback service's definition: what the kernel needs to run its API and workers."""

import sqlalchemy as sa

from services.feedback import api, views
from services.feedback.handlers import feedback_service
from services.kernel.events import to_micros, utc_now
from services.kernel.metrics import QueryGauge
from services.kernel.service import ServiceDefinition, Subscription


def _project_evaluation_handlers(container):
    """A project evaluation (共评, ``ProjectRated``) becomes a rating of the project and of its
    responsible unit, once."""
    service = feedback_service(container)
    return {"ProjectRated": service.record_project_evaluation}


def _sweep_overdue(container) -> str:
    count = feedback_service(container).sweep_overdue()
    return f"feedback: {count} follow-up case(s) became overdue"


def _collectors(container):
    t = views.CASES.table

    def cases(overdue_only: bool):
        def query(connection):
            where = [t.c.status == "open"]
            if overdue_only:  # past the deadline, whether or not the overdue event is recorded yet
                where.append(t.c.deadline_us <= to_micros(utc_now()))
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
    blueprints=api.blueprints,
    subscriptions=(
        Subscription(group="feedback.project-evaluations", topics=("projects.events",),
                     handlers=_project_evaluation_handlers),
    ),
    commands={"sweep-overdue": ("record follow-up cases past their deadline as overdue (run it periodically)",
                                _sweep_overdue)},
    collectors=_collectors,
)
