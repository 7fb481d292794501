"""Every service's event history for staff: the stream index read model and its endpoints.

``GET /streams/<id>`` summarises a stream from the ``stream_index`` read model;
``GET /streams/<id>/events`` returns its events, optionally only up to a version or an instant
("as of" views); ``GET /events`` pages through the whole log by position. Admins only; each event as the privacy
policy shows staff (:func:`services.kernel.privacy.for_admin`: a secret ballot's approvals are null).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import marshmallow as ma
import sqlalchemy as sa
from flask.views import MethodView
from sqlalchemy.engine import Connection

from services.kernel import privacy
from services.kernel.db import Prepared, read_transaction
from services.kernel.errors import NotFound
from services.kernel.events import StoredEvent, format_time, from_micros, to_micros
from services.kernel.model import role_names
from services.kernel.web import Blueprint, Schema, current_principal, etagged

STAFF_ROLES = role_names("admin")


class StreamIndex:
    """Read model: one row per stream with its kind, version and the times it was first/last written."""

    name = "stream_index"

    def __init__(self) -> None:
        metadata = sa.MetaData()
        self.table = sa.Table(
            "stream_index",
            metadata,
            sa.Column("stream_id", sa.String(200), primary_key=True),
            sa.Column("stream_type", sa.String(100), nullable=False),  # no index: no read is by it
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("last_event_type", sa.String(200), nullable=False),
            sa.Column("last_position", sa.BigInteger, nullable=False),
            sa.Column("created_at_us", sa.BigInteger, nullable=False),
            sa.Column("updated_at_us", sa.BigInteger, nullable=False),
        )
        self.tables = [self.table]
        t = self.table
        # every append runs one of these: prepared once (services.kernel.db.Prepared)
        self._insert = Prepared(t.insert().values({c.name: sa.bindparam(c.name) for c in t.columns}))
        self._update = Prepared(t.update().where(t.c.stream_id == sa.bindparam("b_stream")).values(
            {name: sa.bindparam(name) for name in ("version", "last_event_type", "last_position", "updated_at_us")}))

    def apply(self, connection: Connection, event: StoredEvent) -> None:
        at = to_micros(event.occurred_at)
        if event.version == 1:
            self._insert.execute(connection, {
                "stream_id": event.stream_id, "stream_type": stream_type(event.stream_id), "version": 1,
                "last_event_type": event.event_type, "last_position": event.position,
                "created_at_us": at, "updated_at_us": at})
        else:
            self._update.execute(connection, {
                "b_stream": event.stream_id, "version": event.version, "last_event_type": event.event_type,
                "last_position": event.position, "updated_at_us": at})

    def apply_many(self, connection: Connection, events: Sequence[StoredEvent]) -> None:
        """The same as :meth:`apply` for each event: one row written per stream of the page."""
        first: dict[str, StoredEvent] = {}
        last: dict[str, StoredEvent] = {}
        for event in events:
            first.setdefault(event.stream_id, event)
            last[event.stream_id] = event
        inserts, updates = [], []
        for stream_id, event in last.items():
            values = {"version": event.version, "last_event_type": event.event_type,
                      "last_position": event.position, "updated_at_us": to_micros(event.occurred_at)}
            if first[stream_id].version == 1:
                inserts.append({"stream_id": stream_id, "stream_type": stream_type(stream_id),
                                "created_at_us": to_micros(first[stream_id].occurred_at), **values})
            else:
                updates.append({"b_stream": stream_id, **values})
        if inserts:
            connection.execute(self.table.insert(), inserts)
        if updates:
            connection.execute(self.table.update().where(self.table.c.stream_id == sa.bindparam("b_stream")), updates)

    def get(self, connection: Connection, stream_id: str) -> dict | None:
        row = connection.execute(sa.select(self.table).where(self.table.c.stream_id == stream_id)).first()
        if row is None:
            return None
        return {
            "stream_id": row.stream_id, "stream_type": row.stream_type, "version": row.version,
            "last_event_type": row.last_event_type, "last_position": row.last_position,
            "created_at": format_time(from_micros(row.created_at_us)),
            "updated_at": format_time(from_micros(row.updated_at_us)),
        }


def stream_type(stream_id: str) -> str:
    """Streams are named ``<kind>-<id>`` (``project-3f2a...``); the kind is the prefix."""
    return stream_id.split("-", 1)[0]


class EventSchema(Schema):
    event_id = ma.fields.String()
    event_type = ma.fields.String()
    schema_version = ma.fields.Integer()
    stream_id = ma.fields.String()
    version = ma.fields.Integer()
    position = ma.fields.Integer()
    occurred_at = ma.fields.String()
    data = ma.fields.Dict()
    metadata = ma.fields.Dict()


class EventPageSchema(Schema):
    events = ma.fields.List(ma.fields.Nested(EventSchema))
    next_after = ma.fields.Integer(metadata={"description": "pass as `after` for the next page"})


class EventPageQuery(Schema):
    after = ma.fields.Integer(load_default=0, validate=ma.validate.Range(min=0))
    limit = ma.fields.Integer(load_default=100, validate=ma.validate.Range(min=1, max=1000))


class StreamEventsQuery(Schema):
    up_to_version = ma.fields.Integer(validate=ma.validate.Range(min=1))
    as_of = ma.fields.AwareDateTime(metadata={"description": "ISO 8601 with a time zone"})


class StreamSummarySchema(Schema):
    stream_id = ma.fields.String()
    stream_type = ma.fields.String()
    version = ma.fields.Integer()
    last_event_type = ma.fields.String()
    last_position = ma.fields.Integer()
    created_at = ma.fields.String()
    updated_at = ma.fields.String()


def history_blueprint(store, index: StreamIndex) -> Blueprint:
    blp = Blueprint("history", __name__, description="Event history (staff): the log, streams, as-of views")

    @blp.route("/events")
    class EventLog(MethodView):
        @blp.arguments(EventPageQuery, location="query")
        @blp.response(200, EventPageSchema)
        def get(self, query):
            """Page through the whole event log in position order"""
            current_principal().require(*STAFF_ROLES)
            events = store.read_all(query["after"], query["limit"])
            return {"events": [privacy.for_admin(e.to_envelope()) for e in events],
                    "next_after": events[-1].position if events else query["after"]}

    @blp.route("/streams/<stream_id>")
    class Stream(MethodView):
        @blp.response(200, StreamSummarySchema)
        def get(self, stream_id: str):
            """Summary of one stream (from the stream index read model)"""
            current_principal().require(*STAFF_ROLES)
            with read_transaction(store.engine) as connection:
                summary = index.get(connection, stream_id)
            if summary is None:
                raise NotFound(f"no stream {stream_id}")
            return etagged(summary, summary["version"])

    @blp.route("/streams/<stream_id>/events")
    class StreamEvents(MethodView):
        @blp.arguments(StreamEventsQuery, location="query")
        @blp.response(200, EventPageSchema)
        def get(self, query, stream_id: str):
            """A stream's events, optionally as of a version or an instant"""
            current_principal().require(*STAFF_ROLES)
            as_of: datetime | None = query.get("as_of")
            events = store.load(stream_id, up_to_version=query.get("up_to_version"), as_of=as_of)
            if not events and store.current_version(stream_id) == 0:
                raise NotFound(f"no stream {stream_id}")
            return {"events": [privacy.for_admin(e.to_envelope()) for e in events],
                    "next_after": events[-1].position if events else 0}

    return blp


RECORDS_LIMIT = 10_000


def records_blueprint(store, service: str) -> Blueprint:
    """``GET /me/data/<service>``: the caller's copy of what this service holds about them (the
    Personal Information Protection Law's right of access and copy; the gateway's ``/me/data``
    gathers the three). Every event about the caller (:func:`services.kernel.privacy.record_of`:
    they are its person, proposer, contributor, recipient, reporter or voter), with someone else's
    personal fields emptied; ratings *of* the caller are not records about them here (the rated get
    their figures, never who rated)."""
    blp = Blueprint(f"records-{service}", __name__, description="个人信息副本 a copy of your records in this service")

    @blp.route(f"/me/data/{service}")
    class MyRecords(MethodView):
        @blp.response(200)
        def get(self):
            """Every record of this service about you, with the time it was recorded (opened: your own
            words and details; another person's read null)"""
            person_id = current_principal().person_id
            found = store.naming(json.dumps(person_id), limit=RECORDS_LIMIT)
            records = []
            for event in found:
                shown = privacy.record_of(event.event_type, event.data, person_id)
                if shown is not None:
                    records.append({"event_type": event.event_type, "stream_id": event.stream_id,
                                    "recorded_at": format_time(event.occurred_at), "data": shown})
            return {"person_id": person_id, "service": service, "records": records,
                    "complete": len(found) < RECORDS_LIMIT}

    return blp
