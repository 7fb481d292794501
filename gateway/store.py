"""The gateway's own small database: idempotency keys, rate-limit windows and the live feed.

SQLite by default (shared by the gunicorn workers of one gateway), PostgreSQL when the gateway
runs as several replicas — then keys and limits hold across replicas too.

- ``idempotency_keys``: (caller, key) → the fingerprint of the first request and, once it was
  answered, its status, headers and body. A second request with the key gets that answer; a
  different body with the same key is a 422; while the first is still running, a 409.
- ``rate_windows``: a fixed one-minute window per caller and per IP.
- ``feed_events``: the events of every service's topic, with their community (and, for a rating or
  case, the person it rates), written by the feed worker (``python -m gateway feed``) without the
  fields the privacy policy keeps out of the feed, and read by the server-sent events stream, which
  shows each reader what the policy lets them see; the row id is the event id clients send back as
  ``Last-Event-ID``.
- ``feed_summaries``: subjects whose ratings changed, until their ``RatingsChanged`` is written to
  the feed at the end of the minute (one per subject and minute, whatever the number of ratings).
- ``live_tickets``: stream tickets (``POST /api/v1/live/tickets``), kept as their SHA-256 only,
  with the caller they were issued to (person, name, roles, community) and the community the
  stream may read; a ticket opens one stream, once, before it expires (a minute by default).
- ``live_streams``: the live streams open now, one row per stream (the caller, the process that
  holds it, when it was opened and last seen): a row is written when a stream opens and deleted
  when it ends, and the process's live hub marks its rows seen every few seconds, so a row that
  has not been seen for :data:`STREAM_STALE_SECONDS` (its process died) no longer counts and is
  pruned. The per-caller cap (``GATEWAY_LIVE_STREAMS_PER_CALLER``) counts these rows, across the
  gunicorn workers and, on PostgreSQL, across replicas.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.kernel.consumer import consumer_offsets_table, dead_letters_table, inbox_table
from services.kernel.db import Prepared, is_sqlite, make_engine, read_transaction, write_transaction
from services.kernel import privacy
from services.kernel.events import StoredEvent, dumps, format_time, from_micros, to_micros, utc_now

metadata = sa.MetaData()
idempotency_keys = sa.Table(
    "idempotency_keys", metadata,
    sa.Column("caller", sa.String(100), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status", sa.Integer, nullable=True),  # NULL while the first request runs
    sa.Column("headers", sa.Text, nullable=True),
    sa.Column("body", sa.LargeBinary, nullable=True),
    sa.Column("created_us", sa.BigInteger, nullable=False, index=True),
)
rate_windows = sa.Table(
    "rate_windows", metadata,
    sa.Column("bucket", sa.String(200), primary_key=True),
    sa.Column("window", sa.BigInteger, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)
feed_events = sa.Table(
    "feed_events", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    sa.Column("community_id", sa.String(100), nullable=True, index=True),
    sa.Column("stream_id", sa.String(200), nullable=False),
    sa.Column("event_type", sa.String(200), nullable=False),
    sa.Column("envelope", sa.Text, nullable=False),
    sa.Column("received_us", sa.BigInteger, nullable=False, index=True),
)
feed_streams = sa.Table(  # which community a stream belongs to, learnt from its events
    "feed_streams", metadata,
    sa.Column("stream_id", sa.String(200), primary_key=True),
    sa.Column("community_id", sa.String(100), nullable=False),
)


feed_rated = sa.Table(  # whom a rating's (or case's) stream rates, learnt from its events
    "feed_rated", metadata,
    sa.Column("stream_id", sa.String(200), primary_key=True),
    sa.Column("person_id", sa.String(100), nullable=False),
)
feed_summaries = sa.Table(  # subjects whose ratings changed, until their RatingsChanged is in the feed
    "feed_summaries", metadata,
    sa.Column("subject_id", sa.String(200), primary_key=True),
    sa.Column("community_id", sa.String(100), nullable=True),
    sa.Column("due_us", sa.BigInteger, nullable=False, index=True),
    sa.Column("pending", sa.Boolean, nullable=False),
)
live_tickets = sa.Table(
    "live_tickets", metadata,
    sa.Column("digest", sa.String(64), primary_key=True),  # SHA-256 of the ticket; the ticket is not kept
    sa.Column("person_id", sa.String(100), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("roles", sa.String(500), nullable=False),  # comma-separated
    sa.Column("community_id", sa.String(100), nullable=True),  # the community the stream reads (None: all, admins)
    sa.Column("caller_community", sa.String(100), nullable=True),
    sa.Column("expires_us", sa.BigInteger, nullable=False, index=True),
    sa.Column("used", sa.Boolean, nullable=False),
)
live_streams = sa.Table(
    "live_streams", metadata,
    sa.Column("stream_id", sa.String(64), primary_key=True),
    sa.Column("caller", sa.String(100), nullable=False, index=True),  # the person id the stream counts against
    sa.Column("owner", sa.String(200), nullable=False),  # the process holding it (host:pid:nonce)
    sa.Column("opened_us", sa.BigInteger, nullable=False),
    sa.Column("seen_us", sa.BigInteger, nullable=False, index=True),
)
# A stream row not marked seen for this long belongs to a process that is gone: it is not counted.
STREAM_STALE_SECONDS = 30.0
# Columns added to feed_events after it was first created (added to older databases at start).
FEED_COLUMNS = (sa.Column("rated_person_id", sa.String(100), nullable=True),)
for _column in FEED_COLUMNS:
    feed_events.append_column(_column)

# What the feed worker runs for every event (GatewayStore.add_feed_event), prepared once.
# what the feed learnt of a stream, by one statement: its community and whom it rates (None where nothing)
_STREAM_KNOWN = Prepared(sa.select(
    sa.select(feed_streams.c.community_id).where(feed_streams.c.stream_id == sa.bindparam("stream_id"))
    .scalar_subquery(),
    sa.select(feed_rated.c.person_id).where(feed_rated.c.stream_id == sa.bindparam("stream_id")).scalar_subquery()))
_STREAM_ADD = Prepared(feed_streams.insert().values(stream_id=sa.bindparam("stream_id"),
                                                    community_id=sa.bindparam("community_id")))
_STREAM_RATED_ADD = Prepared(feed_rated.insert().values(stream_id=sa.bindparam("stream_id"),
                                                        person_id=sa.bindparam("person_id")))
_FEED_ADD = Prepared(feed_events.insert().values(
    **{name: sa.bindparam(name) for name in ("event_id", "community_id", "stream_id", "event_type",
                                              "rated_person_id", "envelope", "received_us")}))
_SUMMARY_PENDING = Prepared(sa.select(feed_summaries.c.pending)
                            .where(feed_summaries.c.subject_id == sa.bindparam("subject_id")))
_SUMMARY_ADD = Prepared(feed_summaries.insert().values(
    **{name: sa.bindparam(name) for name in ("subject_id", "community_id", "due_us", "pending")}))
_SUMMARY_DUE = Prepared(feed_summaries.update().where(feed_summaries.c.subject_id == sa.bindparam("subject_id"))
                        .values(due_us=sa.bindparam("due_us"), pending=True))


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


@dataclass(frozen=True)
class Ticket:
    """Whom a redeemed stream ticket was issued to, and the community its stream reads."""

    person_id: str
    name: str
    roles: tuple[str, ...]
    caller_community: str | None
    community_id: str | None


@dataclass
class Remembered:
    status: int | None
    headers: dict[str, str]
    body: bytes
    same_request: bool


class GatewayStore:
    def __init__(self, url: str) -> None:
        self.engine: Engine = make_engine(url)

    def create_schema(self) -> None:
        with write_transaction(self.engine) as connection:
            if not is_sqlite(connection):
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4242)")
            metadata.create_all(connection)
            present = {c["name"] for c in sa.inspect(connection).get_columns("feed_events")}
            for column in FEED_COLUMNS:
                if column.name not in present:
                    connection.execute(sa.text(f"ALTER TABLE feed_events ADD COLUMN {column.name} "
                                               f"{column.type.compile(connection.dialect)}"))
            inbox_table.create(connection, checkfirst=True)  # the feed worker's exactly-once inbox
            consumer_offsets_table.create(connection, checkfirst=True)  # its offsets, kept with its effects
            dead_letters_table.create(connection, checkfirst=True)  # and the dead letters it kept

    # -- idempotency ------------------------------------------------------------------------------

    def claim_key(self, caller: str, key: str, print_: str, ttl: timedelta) -> Remembered | None:
        """Start the first request with this key (None), or return what is remembered of it."""
        now = utc_now()
        with write_transaction(self.engine) as connection:
            t = idempotency_keys
            connection.execute(t.delete().where(t.c.created_us < to_micros(now - ttl)))
            row = connection.execute(sa.select(t).where(t.c.caller == caller, t.c.key == key)).first()
            if row is None:
                connection.execute(t.insert().values(caller=caller, key=key, fingerprint=print_,
                                                     created_us=to_micros(now)))
                return None
            return Remembered(row.status, json.loads(row.headers) if row.headers else {}, row.body or b"",
                              row.fingerprint == print_)

    def remember(self, caller: str, key: str, status: int, headers: dict[str, str], body: bytes) -> None:
        with write_transaction(self.engine) as connection:
            t = idempotency_keys
            connection.execute(t.update().where(t.c.caller == caller, t.c.key == key).values(
                status=status, headers=json.dumps(headers), body=body))

    def forget(self, caller: str, key: str) -> None:
        """The first request failed before a service decided anything: let a retry run it."""
        with write_transaction(self.engine) as connection:
            t = idempotency_keys
            connection.execute(t.delete().where(t.c.caller == caller, t.c.key == key))

    # -- rate limits ------------------------------------------------------------------------------

    def hit(self, buckets: list[str], now: datetime | None = None) -> tuple[list[int], int]:
        """Count one request in each bucket's current minute; (counts, seconds left in the minute)."""
        now = now or utc_now()
        seconds = int(now.timestamp())
        window = seconds // 60
        counts = []
        with write_transaction(self.engine) as connection:
            t = rate_windows
            if seconds % 60 == 0:
                connection.execute(t.delete().where(t.c.window < window - 1))
            for bucket in buckets:
                updated = connection.execute(t.update().where(t.c.bucket == bucket, t.c.window == window)
                                             .values(count=t.c.count + 1)).rowcount
                if not updated:
                    connection.execute(t.insert().values(bucket=bucket, window=window, count=1))
                counts.append(connection.execute(sa.select(t.c.count).where(
                    t.c.bucket == bucket, t.c.window == window)).scalar())
        return counts, 60 - seconds % 60

    # -- live stream tickets ----------------------------------------------------------------------

    def issue_ticket(self, ticket: str, holder: Ticket, ttl: timedelta) -> datetime:
        """Keep a new ticket (its digest) for ``holder``; when it expires. Expired tickets go."""
        now = utc_now()
        expires = now + ttl
        t = live_tickets
        with write_transaction(self.engine) as connection:
            connection.execute(t.delete().where(t.c.expires_us < to_micros(now)))
            connection.execute(t.insert().values(
                digest=_digest(ticket), person_id=holder.person_id, name=holder.name, roles=",".join(holder.roles),
                community_id=holder.community_id, caller_community=holder.caller_community,
                expires_us=to_micros(expires), used=False))
        return expires

    def redeem_ticket(self, ticket: str) -> Ticket | None:
        """The ticket's holder, once: None for an unknown, expired or already used ticket (the
        first of two concurrent redemptions wins)."""
        t = live_tickets
        digest = _digest(ticket)
        with write_transaction(self.engine) as connection:
            claimed = connection.execute(t.update().where(
                t.c.digest == digest, t.c.used.is_(False), t.c.expires_us >= to_micros(utc_now())
            ).values(used=True)).rowcount
            if claimed != 1:
                return None
            row = connection.execute(sa.select(t).where(t.c.digest == digest)).one()
        return Ticket(row.person_id, row.name, tuple(r for r in row.roles.split(",") if r), row.caller_community,
                      row.community_id)

    # -- open live streams (the per-caller cap) ---------------------------------------------------

    def open_stream(self, stream_id: str, caller: str, owner: str, limit: int,
                    stale_seconds: float = STREAM_STALE_SECONDS) -> int | None:
        """Record a stream of ``caller`` unless they hold ``limit`` streams already (rows seen in
        the last ``stale_seconds``): None when recorded, else the number they hold. Serialised per
        caller (SQLite: the write lock; PostgreSQL: an advisory lock on the caller), so two
        streams opened at once cannot both take the last place."""
        now = to_micros(utc_now())
        t = live_streams
        with write_transaction(self.engine) as connection:
            if not is_sqlite(connection):
                key = int.from_bytes(hashlib.sha256(f"live:{caller}".encode()).digest()[:8], "big", signed=True)
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            held = connection.execute(sa.select(sa.func.count()).select_from(t).where(
                t.c.caller == caller, t.c.seen_us >= now - int(stale_seconds * 1_000_000))).scalar()
            if held >= limit:
                return held
            connection.execute(t.insert().values(stream_id=stream_id, caller=caller, owner=owner,
                                                 opened_us=now, seen_us=now))
        return None

    def close_stream(self, stream_id: str) -> None:
        with write_transaction(self.engine) as connection:
            connection.execute(live_streams.delete().where(live_streams.c.stream_id == stream_id))

    def touch_streams(self, stream_ids, stale_seconds: float = STREAM_STALE_SECONDS) -> int:
        """Mark these streams seen now (one UPDATE per 500 of them) and prune every stream row
        not seen for ``stale_seconds``; how many rows were pruned."""
        now = to_micros(utc_now())
        ids = sorted(stream_ids)
        t = live_streams
        with write_transaction(self.engine) as connection:
            for start in range(0, len(ids), 500):
                connection.execute(t.update().where(t.c.stream_id.in_(ids[start:start + 500])).values(seen_us=now))
            return connection.execute(t.delete().where(t.c.seen_us < now - int(stale_seconds * 1_000_000))).rowcount

    def open_streams(self, caller: str | None = None, stale_seconds: float = STREAM_STALE_SECONDS) -> int:
        """Streams open now (of ``caller``, or everybody's)."""
        t = live_streams
        where = [t.c.seen_us >= to_micros(utc_now()) - int(stale_seconds * 1_000_000)]
        if caller is not None:
            where.append(t.c.caller == caller)
        with read_transaction(self.engine) as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(t).where(*where)).scalar()

    # -- live feed --------------------------------------------------------------------------------

    def add_feed_event(self, connection, event: StoredEvent) -> None:
        """Keep one event for the live stream, under its community (from its data, or from an
        earlier event of its stream). The feed worker runs this for every event of the three
        services, so its statements are prepared once (``Prepared``; issue 23: through SQLAlchemy's
        statement building they cost the worker more than the rest of a message did)."""
        stream = {"stream_id": event.stream_id}
        known_community, known_rated = _STREAM_KNOWN.first(connection, stream)
        community = event.data.get("community_id") if isinstance(event.data.get("community_id"), str) else None
        if not community:
            community = known_community
        elif known_community is None:
            _STREAM_ADD.execute(connection, {**stream, "community_id": community})
        # A rating's, a case's or a subject's stream rates the subject's person (the subject's own
        # events, e.g. a burst incident of its ratings opened or grown, are rating events too).
        rated = event.data.get("person_id" if event.event_type == "SubjectRegistered" else "subject_person_id")
        if not (isinstance(rated, str) and rated):
            rated = known_rated
        elif known_rated is None:
            _STREAM_RATED_ADD.execute(connection, {**stream, "person_id": rated})
        now = utc_now()
        _FEED_ADD.execute(connection, {
            "event_id": event.event_id, "community_id": community, "stream_id": event.stream_id,
            "event_type": event.event_type, "rated_person_id": rated,
            "envelope": dumps(privacy.for_feed(event.to_envelope())), "received_us": to_micros(now)})
        if privacy.is_rating_event(event.event_type):
            subject = privacy.rated_subject(event.event_type, event.data, event.stream_id)
            if subject:
                self._summary_due(connection, subject, community, now)

    @staticmethod
    def _summary_due(connection, subject: str, community: str | None, now: datetime) -> None:
        """The subject's next ``RatingsChanged``: at the end of the current minute of a fixed grid
        (one per subject and minute at most, whatever the number of ratings in it)."""
        grid = privacy.SUMMARY_SECONDS * 1_000_000
        due = (to_micros(now) // grid + 1) * grid
        row = _SUMMARY_PENDING.first(connection, {"subject_id": subject})
        if row is None:
            _SUMMARY_ADD.execute(connection, {"subject_id": subject, "community_id": community, "due_us": due,
                                              "pending": True})
        elif not row[0]:
            _SUMMARY_DUE.execute(connection, {"subject_id": subject, "due_us": due})

    def flush_summaries(self, now: datetime | None = None) -> int:
        """Put every due ``RatingsChanged`` into the feed (called by each process's live hub as it
        polls; a summary is written once even when several processes flush at the same time)."""
        now_us = to_micros(now or utc_now())
        t = feed_summaries
        with read_transaction(self.engine) as connection:
            due = connection.execute(sa.select(t.c.subject_id).where(t.c.pending.is_(True), t.c.due_us <= now_us)
                                     .limit(1)).first()
        if due is None:
            return 0
        written = 0
        with write_transaction(self.engine) as connection:
            rows = connection.execute(sa.select(t).where(t.c.pending.is_(True), t.c.due_us <= now_us)
                                      .order_by(t.c.due_us, t.c.subject_id)).all()
            for row in rows:
                claimed = connection.execute(t.update().where(t.c.subject_id == row.subject_id, t.c.pending.is_(True))
                                             .values(pending=False)).rowcount
                if not claimed:
                    continue
                event_id = f"summary-{row.subject_id}-{row.due_us}"
                envelope = {"event_id": event_id, "event_type": privacy.SUMMARY_EVENT, "stream_id": row.subject_id,
                            "occurred_at": format_time(from_micros(row.due_us)),
                            "data": {"subject_id": row.subject_id, "community_id": row.community_id},
                            "metadata": {}}
                connection.execute(feed_events.insert().values(
                    event_id=event_id, community_id=row.community_id, stream_id=row.subject_id,
                    event_type=privacy.SUMMARY_EVENT, rated_person_id=None,
                    envelope=json.dumps(envelope, ensure_ascii=False, separators=(",", ":")), received_us=now_us))
                written += 1
        return written

    def feed_after(self, community_id: str | None, after_id: int, limit: int = 100) -> list[Any]:
        t = feed_events
        where = [t.c.id > after_id]
        if community_id is not None:
            where.append(t.c.community_id == community_id)
        with read_transaction(self.engine) as connection:
            return connection.execute(sa.select(t).where(*where).order_by(t.c.id).limit(limit)).all()

    def last_feed_id(self) -> int:
        with read_transaction(self.engine) as connection:
            return connection.execute(sa.select(sa.func.coalesce(sa.func.max(feed_events.c.id), 0))).scalar()

    def purge_person(self, connection, person_id: str) -> int:
        """Forget what the gateway keeps in clear of an erased person: the answers kept for their
        Idempotency-Keys (opened answers: names, phone, comments) and their live stream tickets
        (their name). The feed keeps events sealed, as the services do. Returns the rows deleted."""
        gone = connection.execute(idempotency_keys.delete().where(idempotency_keys.c.caller == person_id)).rowcount
        gone += connection.execute(live_tickets.delete().where(live_tickets.c.person_id == person_id)).rowcount
        return gone

    def prune_feed(self, retention: timedelta, connection=None) -> int:
        statement = feed_events.delete().where(feed_events.c.received_us < to_micros(utc_now() - retention))
        if connection is not None:
            return connection.execute(statement).rowcount
        with write_transaction(self.engine) as own:
            return own.execute(statement).rowcount
