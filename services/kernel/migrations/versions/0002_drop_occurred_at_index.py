"""Drop the index on events.occurred_at_us (issue 23).

The only read of the log by time is of one stream (``EventStore.load(as_of=…)``), which the
unique (stream_id, version) index narrows; the index cost every append a write on one more page.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "ix_events_occurred_at" in {index["name"] for index in sa.inspect(op.get_bind()).get_indexes("events")}:
        op.drop_index("ix_events_occurred_at", table_name="events")


def downgrade() -> None:
    raise RuntimeError("the kernel's migrations go forward only: restore a backup to go back (docs/operations.md)")
