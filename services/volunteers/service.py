"""The volunteers service's definition: what the kernel needs to run its API and workers."""

import sqlalchemy as sa

from services.kernel.metrics import QueryGauge
from services.kernel.service import ServiceDefinition, Subscription
from services.volunteers import api, views
from services.volunteers.handlers import VolunteersService


def _project_labour_handlers(container):
    """Labour delivered to a co-creation project is credited to the contributor's card, once."""
    service = VolunteersService(container.store)
    return {"ContributionDelivered": service.credit_project_labour}


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
    blueprints=api.blueprints,
    subscriptions=(
        Subscription(group="volunteers.project-labour", topics=("projects.events",),
                     handlers=_project_labour_handlers),
    ),
    collectors=_collectors,
)
