"""The log's JSON codec and how events read from the log are decoded (issue 23)."""

import json
import time
import uuid
from typing import ClassVar

import msgspec
import pytest

from services.kernel.events import EnvelopeError, StoredEvent, dumps, from_micros, loads
from services.kernel.model import NewEvent, new_correlation_id, new_event_id


def test_the_canonical_text_is_the_standard_librarys():
    for value in ({"b": 1, "a": "同意修建休闲活动室", "c": [1, None, True, {"z": 0, "y": "x"}]}, {}, {"n": -7},
                  {"nested": {"k": ["一", "二"]}}):
        assert dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    # keys that are not strings: written as the standard library writes them
    assert dumps({1: "a"}) == '{"1":"a"}'
    assert loads(dumps({"a": "同意"})) == {"a": "同意"}


def test_a_record_nested_too_deep_or_not_json_is_an_envelope_error():
    with pytest.raises(EnvelopeError):
        StoredEvent.from_json("[" * 100_000 + "]" * 100_000)
    with pytest.raises(EnvelopeError):
        StoredEvent.from_json(b"\xff")


def test_event_ids_are_time_ordered_uuids_version_7():
    ids = [new_event_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(uuid.UUID(i).version == 7 and str(uuid.UUID(i)) == i for i in ids)
    assert NewEvent("X", {}).event_id != NewEvent("X", {}).event_id
    later = new_event_id()
    time.sleep(0.002)
    assert new_event_id() > later  # a later millisecond sorts later


def test_correlation_ids_are_random_uuids_version_4():
    ids = [new_correlation_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(uuid.UUID(i).version == 4 and uuid.UUID(i).variant == uuid.RFC_4122 and str(uuid.UUID(i)) == i
               for i in ids)
    # every one of the 122 random bits varies
    ints = [uuid.UUID(i).int for i in ids]
    varied = 0
    for x in ints[1:]:
        varied |= x ^ ints[0]
    assert bin(varied).count("1") == 122


class Level(msgspec.Struct):
    level: int
    subject_id: str = ""


def test_an_event_read_from_the_log_decodes_each_part_when_first_read():
    row = (3, "e-1", "rating-r1", 1, "RatingSubmitted", 1, 1_796_000_000_000_001,
           b'{"level":4,"subject_id":"s1","comment":"\xe5\xa5\xbd"}', b'{"actor":"p1"}')
    event = StoredEvent.of_log_row(*row)
    assert "data" not in event.__dict__ and "metadata" not in event.__dict__
    assert event.data_as(Level) == Level(4, "s1")  # typed, from the bytes
    assert "data" not in event.__dict__
    made = StoredEvent("e-1", "RatingSubmitted", 1, "rating-r1", 1, 3, from_micros(1_796_000_000_000_001),
                       {"level": 4, "subject_id": "s1", "comment": "好"}, {"actor": "p1"})
    assert event == made and event.occurred_at == made.occurred_at
    assert made.data_as(Level) == Level(4, "s1")  # a decoded payload is converted
    with pytest.raises(AttributeError):
        event.no_such_field  # noqa: B018


def test_the_apps_json_is_flasks_own_text_encoded_faster():
    """Every app's answers (``web.CompactJSON``, msgspec) are the text Flask's own encoder writes:
    compact, UTF-8, keys sorted; what msgspec cannot encode still goes to Flask's encoder."""
    import decimal

    import flask
    from flask.json.provider import DefaultJSONProvider

    from services.kernel.web import CompactJSON

    app = flask.Flask("codec")
    ours, flasks = CompactJSON(app), DefaultJSONProvider(app)
    ours.ensure_ascii = flasks.ensure_ascii = False
    for value in ({"z": 1, "a": "同意修建休闲活动室", "m": [1.5, None, True, {"y": "x", "b": -2}]}, [], "文",
                  {"project": {"title": "路灯", "cost_fen": 120_000}, "recorded": [], "created_id": None}):
        assert ours.dumps(value) == flasks.dumps(value, separators=(",", ":"))
    with app.app_context():
        assert app.json.dumps is not None
        body = ours.response({"b": "二", "a": 1})
        assert body.get_data() == b'{"a":1,"b":"\xe4\xba\x8c"}\n' and body.mimetype == "application/json"

    class Markup:
        def __html__(self) -> str:
            return "<b>x</b>"

    assert ours.dumps({"html": Markup(), "amount": decimal.Decimal("1.50")}) == '{"amount":"1.50","html":"<b>x</b>"}'
    assert ours.dumps({"a": 1}, indent=2) == flasks.dumps({"a": 1}, indent=2)


def test_aggregate_states_are_written_as_the_domain_kernel_writes_them():
    """The read models' codec (msgspec, installed by services.kernel.aggregate) writes the text the
    domain kernel's standard-library codec writes, and reads it back."""
    import services.kernel.aggregate  # noqa: F401 (installs the codec)
    from services.kernel import model
    from services.projects.domain import Project

    project = Project(id="project-1")
    project.title, project.ballots = "修建休闲活动室", {"p-2": "yes", "p-1": "no"}
    text = project.to_json()
    assert model._state_codec[0] is dumps
    assert text == model._canonical({name: getattr(project, name) for name in model._field_names(Project)})
    assert Project.from_json(text) == project and Project.from_json(text.encode()) == project


def test_an_event_read_from_the_log_is_published_as_the_same_text_without_decoding_it():
    data, metadata = {"title": "路灯", "cost_fen": 120_000, "tags": ["a", {"z": None, "b": 1.5}]}, {
        "actor": "resident-1", "causation_id": None, "correlation_id": "c-1"}
    for encode in (lambda v: dumps(v).encode(), dumps):  # SQLite gives bytes, PostgreSQL text
        event = StoredEvent.of_log_row(7, str(new_event_id()), "project-1", 3, "ProjectProposed", 1,
                                       1_764_806_400_123_456, encode(data), encode(metadata))
        spliced = event.to_json()
        assert "data" not in event.__dict__  # not decoded to be published
        decoded = StoredEvent.of_row(event.event_id, event.event_type, 1, "project-1", 3, 7, event.occurred_at,
                                     loads(dumps(data)), loads(dumps(metadata)))  # as a decoding read gives them
        assert spliced == decoded.to_json()
        assert StoredEvent.from_json(spliced).data == data


def test_a_state_is_read_back_as_its_class_would_make_it():
    """Every field in the JSON: the instance without ``__init__``; a state written before a field
    existed gets the field's default, and a class that checks its fields still checks them."""
    import dataclasses

    from services.kernel.model import Aggregate

    @dataclasses.dataclass
    class Box(Aggregate):
        ballots: dict = dataclasses.field(default_factory=dict)
        title: str = "box"

    @dataclasses.dataclass
    class Counted(Aggregate):
        count: int = 0

        def __post_init__(self) -> None:
            if isinstance(self.count, list):  # an older row kept the list
                self.count = len(self.count)

    box = Box(id="b1", version=3, ballots={"r1": "yes"}, title="议事")
    read = Box.from_json(box.to_json())
    assert read == box and type(read) is Box and read.ballots is not box.ballots
    older = json.loads(box.to_json())
    del older["title"]
    assert Box.from_json(json.dumps(older)) == Box(id="b1", version=3, ballots={"r1": "yes"})  # the default
    assert Counted.from_json(json.dumps({**json.loads(Counted(id="c").to_json()), "count": [1, 2]})).count == 2
    with pytest.raises(TypeError):  # a field the class no longer has
        Box.from_json(json.dumps({**json.loads(box.to_json()), "gone": 1}))

    @dataclasses.dataclass
    class Retiring(Box):  # "gone" is derived now: a state that holds it reads without it
        retired: ClassVar[frozenset[str]] = frozenset({"gone"})

    retiring = Retiring(id="b1", version=3, ballots={"r1": "yes"}, title="议事")
    read = Retiring.from_json(json.dumps({**json.loads(retiring.to_json()), "gone": 1}))
    assert read == retiring and "gone" not in read.to_json() and type(read) is Retiring
