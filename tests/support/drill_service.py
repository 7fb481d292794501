"""A service that exists only for tests: a read model to rebuild and a consumer whose effects count.

Run its consumer as a real process: ``python -m tests.support.drill_service consumer drill.effects``.
"""

from __future__ import annotations

import os
import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.kernel.events import StoredEvent
from services.kernel.service import ServiceDefinition, Subscription, main

DRILL_TOPIC = "drill.events"
_metadata = sa.MetaData()

# Deliberately no unique constraint: only the inbox stands between a redelivery and a second row.
effects = sa.Table(
    "drill_effects",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("stream_id", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)


class TypeCounts:
    """A read model: how many events of each type, and the sum of their ``amount_fen``."""

    name = "type_counts"

    def __init__(self) -> None:
        self.table = sa.Table(
            "type_counts", sa.MetaData(),
            sa.Column("event_type", sa.String(200), primary_key=True),
            sa.Column("count", sa.Integer, nullable=False),
            sa.Column("amount_fen", sa.BigInteger, nullable=False),
        )
        self.tables = [self.table]

    def apply(self, connection: Connection, event: StoredEvent) -> None:
        amount = int(event.data.get("amount_fen", 0))
        updated = connection.execute(
            self.table.update().where(self.table.c.event_type == event.event_type)
            .values(count=self.table.c.count + 1, amount_fen=self.table.c.amount_fen + amount)
        ).rowcount
        if not updated:
            connection.execute(self.table.insert().values(event_type=event.event_type, count=1, amount_fen=amount))


def record_effect(connection: Connection, event: StoredEvent) -> None:
    delay = float(os.environ.get("DRILL_HANDLER_DELAY", "0"))
    if delay:
        time.sleep(delay)
    if event.data.get("poison"):
        raise ValueError("this event is poison")
    connection.execute(effects.insert().values(event_id=event.event_id, stream_id=event.stream_id,
                                               version=event.version))


def _handlers(container):
    effects.create(container.store.engine, checkfirst=True)
    return {"Happened": record_effect, "Pledged": record_effect}


DEFINITION = ServiceDefinition(
    name="drill",
    title="drill service (tests only)",
    description="A service used by the fault drills.",
    projections=lambda: [TypeCounts()],
    subscriptions=(Subscription(group="drill.effects", topics=(DRILL_TOPIC,), handlers=_handlers),),
)

if __name__ == "__main__":
    main(DEFINITION)
