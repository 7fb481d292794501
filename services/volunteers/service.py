"""The volunteers service's definition: what the kernel needs to run its API and workers."""

import sqlalchemy as sa

from services.kernel.metrics import QueryGauge
from services.kernel.service import ServiceDefinition, Subscription
from services.kernel.events import Metadata, format_time
from services.volunteers import api, handlers, views
from services.volunteers.commands import CreditProjectLabour, NoteFeedbackCase


# This consumer's side of its contract with the projects service: what ``credit`` below reads of a
# ``ContributionDelivered`` event's data, with the types it needs (a dict would be an object with
# those fields). ``kind`` is read on every delivery; a labour delivery, the only kind credited,
# must carry every other required field too (``delivered_at`` an ISO 8601 UTC time). Optional
# fields may be absent. A delivery without a field it must carry makes the handler raise, so the
# consumer dead-letters it. tests/integration/test_event_contracts.py holds the projects service's
# real events to this, and this to what the handler needs.
CONTRIBUTION_DELIVERED_CONTRACT = {
    "event_type": "ContributionDelivered",
    "acted_on": ("kind", "labour"),  # a delivery of another kind is read for its kind only
    "required": {"kind": str, "project_id": str, "community_id": str, "pledge_id": str, "delivery_no": int,
                 "contributor_id": str, "contributor_name": str, "labour_minutes": int, "delivered_at": str},
    "optional": {"project_title": str},
}


def _project_labour_handlers(container):
    """Labour delivered to a co-creation project is credited to the contributor's card, once."""

    def credit(connection, event) -> None:
        if event.data["kind"] == "labour":  # a delivery without its kind is refused (dead-lettered)
            container.bus.handle(CreditProjectLabour(delivery=event.data), metadata=Metadata.caused_by(event),
                                 connection=connection)

    return {"ContributionDelivered": credit}


# What the feedback-cases consumer reads of feedback's follow-up case events: a case of a person's
# rating keeps their personal information until it closes (services.volunteers.domain.Person).
FOLLOW_UP_CASE_CONTRACTS = {
    "FollowUpOpened": {"case_id": str, "person_id": str, "community_id": str},
    "FollowUpClosed": {"case_id": str},
    "FollowUpClosedByExclusion": {"case_id": str},
}


def _feedback_case_handlers(container):
    """Follow-up cases opened and closed in the feedback service: the obligations that keep a
    person's information (an erasure is refused while one is open)."""

    def note(connection, event) -> None:
        case = {field: event.data[field] for field in FOLLOW_UP_CASE_CONTRACTS[event.event_type]}
        container.bus.handle(NoteFeedbackCase(event_type=event.event_type, case=case,
                                              occurred_at=format_time(event.occurred_at)),
                             metadata=Metadata.caused_by(event), connection=connection)

    return {event_type: note for event_type in FOLLOW_UP_CASE_CONTRACTS}


def _collectors(container):
    t = views.CREDITS.table
    return [QueryGauge(container.store.engine, "cocreate_volunteer_approved_minutes",
                       "Approved volunteer minutes per community and source (activity, project)",
                       ["community", "source"],
                       lambda c: c.execute(sa.select(t.c.community_id, t.c.source, sa.func.sum(t.c.minutes))
                                           .group_by(t.c.community_id, t.c.source)).all())]


DEFINITION = ServiceDefinition(
    name="volunteers",
    title="义工卡 volunteers",
    description="The volunteer card (义工卡): activities, hours, points, star levels, rewards, certificates.",
    projections=views.projections,
    blueprints=api.BLUEPRINTS,
    resources=handlers.resources,
    command_handlers=handlers.command_handlers,
    subscriptions=(
        Subscription(group="volunteers.project-labour", topics=("projects.events",),
                     handlers=_project_labour_handlers),
        Subscription(group="volunteers.feedback-cases", topics=("feedback.events",),
                     handlers=_feedback_case_handlers),
    ),
    commands={"reapply-erasures": ("after a restore of this database: record again the erasures the key store's "
                                   "log has (docs/operations.md)", handlers.reapply_erasures)},
    collectors=_collectors,
)
