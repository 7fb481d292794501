"""Every service's event history for staff: the endpoints that read the log.

``GET /streams/<id>`` summarises a stream (from the log: :func:`stream_summary`);
``GET /streams/<id>/events`` returns its events, optionally only up to a version or an instant
("as of" views); ``GET /events`` pages through the whole log by position. Admins only; each event as the privacy
policy shows staff (:func:`services.kernel.privacy.for_admin`: a secret ballot's approvals are null).
"""

from __future__ import annotations

import json
from datetime import datetime

import marshmallow as ma
import sqlalchemy as sa
from flask.views import MethodView
from sqlalchemy.engine import Connection

from services.kernel import privacy
from services.kernel.db import Prepared, read_transaction
from services.kernel.errors import NotFound
from services.kernel.events import format_time, from_micros
from services.kernel.eventstore import events_table
from services.kernel.model import role_names
from services.kernel.web import Blueprint, Schema, current_principal, etagged

STAFF_ROLES = role_names("admin")


# A stream's summary, read from the log itself: its last event and its first one, each found through
# the unique (stream_id, version) index. (Until issue 23 a read model, ``stream_index``, kept it: one
# row written by every command, a statement and a page or two more in each write transaction, for a
# staff endpoint the log answers as fast. A store made before keeps that table, no longer written:
# docs/operations.md.)
_LAST_EVENT = Prepared(sa.select(events_table.c.version, events_table.c.event_type, events_table.c.position,
                                 events_table.c.occurred_at_us)
                       .where(events_table.c.stream_id == sa.bindparam("stream_id"))
                       .order_by(events_table.c.version.desc()).limit(1))
_FIRST_EVENT_AT = Prepared(sa.select(events_table.c.occurred_at_us).where(
    events_table.c.stream_id == sa.bindparam("stream_id"), events_table.c.version == 1))


def stream_summary(connection: Connection, stream_id: str) -> dict | None:
    """A stream's kind, version, last event and the times it was first and last written (None for
    a stream without events)."""
    last = _LAST_EVENT.first(connection, {"stream_id": stream_id})
    if last is None:
        return None
    version, last_event_type, last_position, updated_at_us = last
    first = _FIRST_EVENT_AT.first(connection, {"stream_id": stream_id})
    return {
        "stream_id": stream_id, "stream_type": stream_type(stream_id), "version": version,
        "last_event_type": last_event_type, "last_position": last_position,
        "created_at": format_time(from_micros(first[0] if first else updated_at_us)),
        "updated_at": format_time(from_micros(updated_at_us)),
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


def history_blueprint(store) -> Blueprint:
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
            """Summary of one stream: its kind, version, last event, first and last write"""
            current_principal().require(*STAFF_ROLES)
            with read_transaction(store.engine) as connection:
                summary = stream_summary(connection, stream_id)
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
