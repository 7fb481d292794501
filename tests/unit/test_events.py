"""The public event envelope (round trip and strict parsing), the upcaster chain and time helpers."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from services.kernel.events import (
    EnvelopeError, Metadata, NewEvent, StoredEvent, UpcasterChain, format_time, from_micros, parse_time,
    to_micros,
)

UTC = timezone.utc
CST = timezone(timedelta(hours=8))


def make_event(**changes) -> StoredEvent:
    fields = dict(
        event_id="4b8e6a1c-0d7f-4c55-9d1e-3a2b1c0d9e8f",
        event_type="ProjectProposed",
        schema_version=2,
        stream_id="project-5f3a",
        version=3,
        position=41,
        occurred_at=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        data={"title": "修缮社区广场", "budget_fen": 1_250_000, "stages": ["共谋", "共建"], "nested": {"ok": True}},
        metadata={"actor": "person-7", "correlation_id": "corr-1", "causation_id": None},
    )
    fields.update(changes)
    return StoredEvent(**fields)


def envelope(**changes) -> dict:
    value = make_event().to_envelope()
    value.update(changes)
    return value


# -- round trip ---------------------------------------------------------------------------------

def test_round_trip_gives_an_equal_event():
    event = make_event()
    raw = event.to_json()
    assert isinstance(raw, bytes)
    back = StoredEvent.from_json(raw)
    assert back == event
    assert back.data["title"] == "修缮社区广场"
    assert back.occurred_at.tzinfo is not None
    assert back.occurred_at.utcoffset() == timedelta(0)


def test_json_keeps_chinese_text_unescaped_and_time_in_utc_with_z():
    raw = make_event().to_json()
    assert "修缮社区广场".encode() in raw
    assert b"\\u" not in raw
    decoded = json.loads(raw)
    assert decoded["occurred_at"] == "2024-05-06T07:08:09.123456Z"
    assert set(decoded) == {"event_id", "event_type", "schema_version", "stream_id", "version", "position",
                            "occurred_at", "data", "metadata"}


def test_round_trip_from_a_non_utc_time_keeps_the_instant():
    moment = datetime(2024, 1, 1, 8, 0, 0, tzinfo=CST)
    event = make_event(occurred_at=moment)
    back = StoredEvent.from_json(event.to_json())
    assert back.occurred_at == moment
    assert back.occurred_at == datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert back.occurred_at.utcoffset() == timedelta(0)


def test_round_trip_from_str_and_whole_second_time():
    event = make_event(occurred_at=datetime(2030, 12, 31, 23, 59, 59, tzinfo=UTC))
    text = event.to_json().decode()
    assert '"occurred_at":"2030-12-31T23:59:59.000000Z"' in text
    assert StoredEvent.from_json(text) == event


def test_envelope_accepts_offset_times_and_normalises_them():
    parsed = StoredEvent.from_envelope(envelope(occurred_at="2024-05-06T15:08:09.5+08:00"))
    assert parsed.occurred_at == datetime(2024, 5, 6, 7, 8, 9, 500000, tzinfo=UTC)
    assert parsed.occurred_at.tzinfo == UTC


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-06T15:08:09.5+08:00", datetime(2024, 5, 6, 7, 8, 9, 500000, tzinfo=UTC)),
    ("2024-05-06T07:08:09.123456Z", datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)),
    ("2024-05-06T07:08:09+00:00", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
    ("20240506T150809+0800", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),  # ISO 8601, not RFC 3339
], ids=repr)
def test_from_json_gives_every_time_in_utc(text, expected):
    parsed = StoredEvent.from_json(json.dumps(envelope(occurred_at=text)))
    assert parsed.occurred_at == expected
    assert parsed.occurred_at.tzinfo is UTC


def test_from_json_refuses_a_time_that_leaves_the_calendar_in_utc():
    with pytest.raises(EnvelopeError, match="out of range"):
        StoredEvent.from_json(json.dumps(envelope(occurred_at="0001-01-01T00:00:00+08:00")))


def test_metadata_as_dict():
    assert Metadata(actor="p", correlation_id="c").as_dict() == {
        "actor": "p", "correlation_id": "c", "causation_id": None}


def test_new_event_gets_a_fresh_id():
    first, second = NewEvent("A", {}), NewEvent("A", {})
    assert first.event_id != second.event_id
    assert first.schema_version == 1


# -- rejection ----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    None, b"", b"not json", "{", b"\xff\xfe\x00garbage", b'{"event_id": "x",}',
])
def test_from_json_rejects_non_json(raw):
    with pytest.raises(EnvelopeError):
        StoredEvent.from_json(raw)


@pytest.mark.parametrize("raw", [b"[1, 2, 3]", b'"a string"', b"42", b"null", b"true"])
def test_from_json_rejects_non_objects(raw):
    with pytest.raises(EnvelopeError, match="not a JSON object"):
        StoredEvent.from_json(raw)


@pytest.mark.parametrize("key", ["event_id", "event_type", "schema_version", "stream_id", "version",
                                 "position", "occurred_at", "data", "metadata"])
def test_from_json_rejects_missing_keys(key):
    value = envelope()
    del value[key]
    with pytest.raises(EnvelopeError) as caught:
        StoredEvent.from_json(json.dumps(value))
    assert key in str(caught.value)


def test_missing_keys_are_all_named():
    with pytest.raises(EnvelopeError) as caught:
        StoredEvent.from_json(b'{"event_id": "x"}')
    message = str(caught.value)
    assert "event_type" in message and "metadata" in message and "position" in message


@pytest.mark.parametrize("changes", [
    {"schema_version": True},
    {"version": False},
    {"position": True},
    {"version": "3"},
    {"position": 4.0},
    {"schema_version": None},
    {"event_type": ""},
    {"event_type": 7},
    {"stream_id": None},
    {"stream_id": ["project-1"]},
    {"data": [1, 2]},
    {"data": "payload"},
    {"metadata": None},
    {"occurred_at": "2024-05-06T07:08:09"},
    {"occurred_at": "2024-05-06T07:08:09.123456"},
    {"occurred_at": "yesterday"},
    {"occurred_at": ""},
    {"occurred_at": 1714979289},
    {"occurred_at": None},
], ids=repr)
def test_from_json_rejects_wrong_types(changes):
    with pytest.raises(EnvelopeError):
        StoredEvent.from_json(json.dumps(envelope(**changes)))


def test_naive_time_rejection_says_so():
    with pytest.raises(EnvelopeError, match="time zone"):
        StoredEvent.from_json(json.dumps(envelope(occurred_at="2024-05-06T07:08:09")))


def test_envelope_error_is_a_value_error():
    assert issubclass(EnvelopeError, ValueError)


# -- upcasters ----------------------------------------------------------------------------------

def v1_to_v2(data):
    # v2 splits "name" into given and family name
    given, _, family = data["name"].partition(" ")
    return {"given": given, "family": family, "calls": [*data.get("calls", []), "v1->v2"]}


def v2_to_v3(data):
    # v3 needs v2's fields: it fails loudly if applied out of order
    return {"display": f"{data['family']}{data['given']}", "calls": [*data["calls"], "v2->v3"]}


@pytest.fixture
def chain() -> UpcasterChain:
    chain = UpcasterChain()
    chain.register("VolunteerRegistered", 2, v2_to_v3)  # registration order does not matter
    chain.register("VolunteerRegistered", 1, v1_to_v2)
    return chain


def test_chain_applies_steps_in_version_order(chain):
    version, data = chain.upcast("VolunteerRegistered", 1, {"name": "明 李"})
    assert version == 3
    assert data == {"display": "李明", "calls": ["v1->v2", "v2->v3"]}


def test_chain_starts_at_the_stored_version(chain):
    version, data = chain.upcast("VolunteerRegistered", 2, {"given": "明", "family": "李", "calls": []})
    assert (version, data) == (3, {"display": "李明", "calls": ["v2->v3"]})


def test_latest_version_is_a_no_op(chain):
    payload = {"display": "李明"}
    version, data = chain.upcast("VolunteerRegistered", 3, payload)
    assert (version, data) == (3, {"display": "李明"})


def test_unknown_type_is_left_alone(chain):
    payload = {"name": "明 李"}
    version, data = chain.upcast("SomethingElse", 1, payload)
    assert version == 1
    assert data is payload
    assert data == {"name": "明 李"}


def test_double_registration_is_rejected(chain):
    with pytest.raises(ValueError, match="VolunteerRegistered v1"):
        chain.register("VolunteerRegistered", 1, lambda data: data)
    # the original step is still the one applied
    assert chain.upcast("VolunteerRegistered", 1, {"name": "明 李"})[1]["display"] == "李明"


def test_latest_version(chain):
    assert chain.latest_version("VolunteerRegistered") == 3
    assert chain.latest_version("VolunteerRegistered", 2) == 3
    assert chain.latest_version("VolunteerRegistered", 3) == 3
    assert chain.latest_version("Unknown") == 1
    assert chain.latest_version("Unknown", 4) == 4
    assert UpcasterChain().latest_version("VolunteerRegistered") == 1


# -- time helpers -------------------------------------------------------------------------------

@pytest.mark.parametrize("moment", [
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2024, 2, 29, 12, 34, 56, 789012, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2099, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
])
def test_micros_round_trip(moment):
    assert from_micros(to_micros(moment)) == moment
    assert from_micros(to_micros(moment)).tzinfo == UTC


def test_micros_known_values():
    assert to_micros(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert to_micros(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC)) == 1_000_005
    assert to_micros(datetime(1970, 1, 1, 8, 0, 1, tzinfo=CST)) == 1_000_000
    assert from_micros(-1) == datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert from_micros(1_700_000_000_123_456) == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)


def test_micros_preserve_order():
    earlier = datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    later = earlier + timedelta(microseconds=1)
    assert to_micros(later) - to_micros(earlier) == 1


def test_naive_datetimes_are_rejected():
    with pytest.raises(ValueError, match="naive"):
        to_micros(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        format_time(datetime(2024, 1, 1))
    with pytest.raises(EnvelopeError):
        parse_time("2024-01-01T00:00:00")


def test_format_and_parse_time():
    moment = datetime(2024, 1, 1, 8, 0, tzinfo=CST)
    assert format_time(moment) == "2024-01-01T00:00:00.000000Z"
    assert parse_time("2024-01-01T00:00:00.000000Z") == moment


# -- poison envelopes that must be EnvelopeError (a consumer dead-letters only EnvelopeError) -------

@pytest.mark.parametrize("occurred_at", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_out_of_range_time_is_an_envelope_error(occurred_at):
    # Valid ISO 8601 with a zone, but converting it to UTC leaves datetime's range.
    with pytest.raises(EnvelopeError):
        StoredEvent.from_json(json.dumps(envelope(occurred_at=occurred_at)))


@pytest.mark.parametrize("event_id", [None, ""])
def test_null_or_empty_event_id_is_rejected(event_id):
    # The event id is the consumers' inbox key: null must not become the string "None".
    with pytest.raises(EnvelopeError):
        StoredEvent.from_json(json.dumps(envelope(event_id=event_id)))
