"""The projects service's definition: what the kernel needs to run its API and workers."""

import sqlalchemy as sa

from services.kernel.events import Metadata
from services.kernel.metrics import QueryGauge
from services.kernel.service import ServiceDefinition
from services.projects import api, handlers, views
from services.projects.commands import CloseDueRounds


def _collectors(container):
    t = views.PROJECTS.table
    return [QueryGauge(container.store.engine, "cocreate_projects", "Projects per community and stage",
                       ["community", "stage"],
                       lambda c: c.execute(sa.select(t.c.community_id, t.c.stage, sa.func.count())
                                           .group_by(t.c.community_id, t.c.stage)).all())]


def _close_due_rounds(container) -> str:
    """``python -m services.projects close-due-rounds``: the periodic job that closes and tallies every
    budgeting round past its closing time (as ``system``)."""
    outcome = container.bus.handle(CloseDueRounds(), metadata=Metadata(actor="system:round-closer"))
    return f"projects: {outcome.result} budgeting round(s) closed"


DEFINITION = ServiceDefinition(
    name="projects",
    title="共同缔造 projects",
    description="Co-creation projects through the five stages 共谋 共建 共管 共评 共享, council votes, "
                "contributions and the community fund.",
    projections=views.projections,
    blueprints=api.BLUEPRINTS,
    command_handlers=handlers.HANDLERS,
    commands={"close-due-rounds": ("close and tally the budgeting rounds past their closing time (run it "
                                   "periodically)", _close_due_rounds)},
    collectors=_collectors,
)
