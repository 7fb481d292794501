"""Baseline: the kernel's tables as they were before migrations (December 2026).

Creates only what a store lacks, so a store made before Alembic came in passes through unchanged.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def tables(metadata: sa.MetaData) -> None:
    """The baseline's tables, frozen here: later changes are later revisions, not edits of this."""
    sa.Table(
        "events", metadata,
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=False),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("stream_id", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("occurred_at_us", sa.BigInteger, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.UniqueConstraint("stream_id", "version", name="uq_events_stream_version"),
        sa.Index("ix_events_occurred_at", "occurred_at_us"),
    )
    sa.Table(
        "inbox", metadata,
        sa.Column("group_id", sa.String(200), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("processed_at_us", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "consumer_offsets", metadata,
        sa.Column("group_id", sa.String(200), primary_key=True),
        sa.Column("topic", sa.String(200), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("topic_id", sa.String(64), nullable=True),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("updated_at_us", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "dead_letters", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("group_id", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=True),
        sa.Column("value", sa.LargeBinary, nullable=True),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("dead_lettered_at_us", sa.BigInteger, nullable=False),
        sa.Column("republished_at_us", sa.BigInteger, nullable=True),
    )
    sa.Table(
        "relay_checkpoints", metadata,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("updated_at_us", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "relay_rounds", metadata,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("first_position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("last_position", sa.BigInteger, nullable=False),
        sa.Column("topic_id", sa.String(64), nullable=True),
        sa.Column("offsets", sa.Text, nullable=False),
        sa.Column("published_at_us", sa.BigInteger, nullable=False),
    )


def upgrade() -> None:
    metadata = sa.MetaData()
    tables(metadata)
    metadata.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    raise RuntimeError("the kernel's migrations go forward only: restore a backup to go back (docs/operations.md)")
