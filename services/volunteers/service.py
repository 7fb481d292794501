"""The volunteers service's definition: what the kernel needs to run its API and workers."""

import sqlalchemy as sa

from services.kernel.metrics import QueryGauge
from services.kernel.service import ServiceDefinition, Subscription
from services.kernel.events import Metadata
from services.volunteers import api, handlers, views
from services.volunteers.commands import CreditProjectLabour


def _project_labour_handlers(container):
    """Labour delivered to a co-creation project is credited to the contributor's card, once."""

    def credit(connection, event) -> None:
        if event.data.get("kind") == "labour":
            container.bus.handle(CreditProjectLabour(delivery=event.data), metadata=Metadata.caused_by(event),
                                 connection=connection)

    return {"ContributionDelivered": credit}


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
    command_handlers=handlers.HANDLERS,
    subscriptions=(
        Subscription(group="volunteers.project-labour", topics=("projects.events",),
                     handlers=_project_labour_handlers),
    ),
    collectors=_collectors,
)
