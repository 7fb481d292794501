"""Contracts of the two events that cross services, tested on the consumer's side.

Each consumer declares, next to its handler, what it reads of the event it consumes and the types
it needs (``CONTRIBUTION_DELIVERED_CONTRACT`` in services/volunteers/service.py,
``PROJECT_RATED_CONTRACT`` in services/feedback/service.py). For each one:

* the events the projects service really records (driven through its API, in this process, and
  read back as the relay would send them) satisfy the declaration;
* the declaration is enough: the handler does its work on an event holding exactly the declared
  fields, no more;
* an event that lacks a declared field is a poison message: the real consumer, against a real
  broker, dead-letters it (kept in its database and sent to ``<topic>.dlq``) with no effect, and
  goes on with the next record.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kafka import KafkaProducer

from services.feedback.service import DEFINITION as FEEDBACK
from services.feedback.service import PROJECT_RATED_CONTRACT, _project_evaluation_handlers
from services.kernel.consumer import EventConsumer, list_dead_letters
from services.kernel.db import write_transaction
from services.kernel.events import StoredEvent, utc_now
from services.kernel.kafka import ensure_topics
from services.projects.service import DEFINITION as PROJECTS
from services.volunteers.service import DEFINITION as VOLUNTEERS
from services.volunteers.service import CONTRIBUTION_DELIVERED_CONTRACT, _project_labour_handlers
from services.kernel.personal import is_sealed
from tests.support.apps import container, driver, service_app
from tests.support.broker import read_topic
from tests.support.consumers import consume_until, count_events
from tests.support.projects import Community

C = "contracts"
UNIT = {"unit_id": "contracts-jsb", "name": "街道建设办"}
# Exactly the declared required fields of each event, with values a real event could have.
MINIMAL_DELIVERY = {"kind": "labour", "project_id": "p-min", "community_id": C, "pledge_id": "pl-min",
                    "delivery_no": 1, "contributor_id": "v-min", "contributor_name": "最小贡献者",
                    "labour_minutes": 90, "delivered_at": "2026-11-03T02:00:00.000000Z"}
MINIMAL_RATING = {"project_id": "p-min", "community_id": C, "responsible_unit": {"unit_id": "u-min", "name": "最小单位"},
                  "person_id": "r-min", "score": 2}


# -- the declarations, read ----------------------------------------------------------------------

def violations(data: Any, contract: dict) -> list[str]:
    """How ``data`` (an event's data) breaks ``contract``; empty when it keeps it."""
    field, value = contract["acted_on"] or (None, None)
    if not isinstance(data, dict):
        return ["the data is not an object"]
    if field is not None and field in data and data[field] != value:
        return _broken(data, {field: contract["required"][field]}, {})  # read for that field only
    return _broken(data, contract["required"], contract["optional"])


def _broken(data: dict, required: dict, optional: dict, prefix: str = "") -> list[str]:
    found = []
    for name, wanted in {**required, **optional}.items():
        if name not in data:
            if name in required:
                found.append(f"{prefix}{name}: missing")
            continue
        value = data[name]
        if isinstance(wanted, dict):
            found += (_broken(value, wanted, {}, f"{prefix}{name}.") if isinstance(value, dict)
                      else [f"{prefix}{name}: {type(value).__name__}, not an object"])
        elif not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
            found.append(f"{prefix}{name}: {type(value).__name__}, not {wanted.__name__}")
    return found


def paths(fields: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every declared field as a path: ("score",), ("responsible_unit", "unit_id"), ..."""
    found = []
    for name, wanted in fields.items():
        found.append((*prefix, name))
        if isinstance(wanted, dict):
            found += paths(wanted, (*prefix, name))
    return found


def without(data: dict, path: tuple[str, ...]) -> dict:
    copy = json.loads(json.dumps(data))
    holder = copy
    for name in path[:-1]:
        holder = holder[name]
    del holder[path[-1]]
    return copy


def event(event_type: str, data: dict, version: int = 1) -> StoredEvent:
    """An event as the projects service's relay would publish it."""
    return StoredEvent(event_id=str(uuid.uuid4()), event_type=event_type, schema_version=1,
                       stream_id=f"project-{data.get('project_id', 'p-min')}", version=version, position=version,
                       occurred_at=utc_now(), data=data,
                       metadata={"actor": "grid-1", "correlation_id": None, "causation_id": None})


def test_the_checker_reads_the_declarations_as_meant():
    assert violations(MINIMAL_DELIVERY, CONTRIBUTION_DELIVERED_CONTRACT) == []
    assert violations({**MINIMAL_DELIVERY, "delivery_no": "1", "project_title": 5}, CONTRIBUTION_DELIVERED_CONTRACT
                      ) == ["delivery_no: str, not int", "project_title: int, not str"]
    assert violations({"kind": "money"}, CONTRIBUTION_DELIVERED_CONTRACT) == []  # not credited: only its kind
    assert violations({"labour_minutes": 5}, CONTRIBUTION_DELIVERED_CONTRACT)[0] == "kind: missing"
    assert violations(without(MINIMAL_RATING, ("responsible_unit", "name")), PROJECT_RATED_CONTRACT) == [
        "responsible_unit.name: missing"]
    assert violations({**MINIMAL_RATING, "score": True}, PROJECT_RATED_CONTRACT) == ["score: bool, not int"]


# -- (a) the producer's real events keep the consumers' contracts -------------------------------

def test_the_projects_service_events_satisfy_what_the_consumers_declare(tmp_path):
    app = service_app(PROJECTS, COCREATE_DATA_DIR=str(tmp_path))
    store = container(app).store
    try:
        d = driver(app)
        c = Community(d, C)
        building = c.approved_project(title="清理河道")["project_id"]
        pledges = {kind: d.post(person, f"/projects/{building}/pledges", body)["created_id"] for kind, person, body in (
            ("labour", c.residents[3], {"kind": "labour", "labour_minutes": 240}),
            ("skills", c.residents[4], {"kind": "skills", "skills_minutes": 60, "description": "电工"}),
            ("money", c.residents[5], {"kind": "money", "money_fen": 50_000}))}
        for kind, minutes in (("labour", 120), ("labour", 90)):
            d.post(c.grid_worker, f"/projects/{building}/pledges/{pledges[kind]}/deliveries", {"labour_minutes": minutes})
        d.post(c.grid_worker, f"/projects/{building}/pledges/{pledges['skills']}/deliveries", {"skills_minutes": 60})
        d.post(c.grid_worker, f"/projects/{building}/pledges/{pledges['money']}/deliveries", {"money_fen": 50_000})
        evaluated = c.project_in_evaluation(UNIT)
        for person, (score, comment) in zip(c.residents, ((5, "很好"), (1, ""), (3, "一般"))):
            d.post(person, f"/projects/{evaluated}/evaluation/ratings", {"score": score, "comment": comment})
        # As the relay sends them and the consumer reads them.
        sent = [StoredEvent.from_json(e.to_json()) for e in store.iterate_all()]
    finally:
        store.engine.dispose()

    for contract, kinds_seen in ((CONTRIBUTION_DELIVERED_CONTRACT, ["labour", "labour", "skills", "money"]),
                                 (PROJECT_RATED_CONTRACT, None)):
        events = [e for e in sent if e.event_type == contract["event_type"]]
        assert len(events) == (4 if kinds_seen else 3), contract["event_type"]
        if kinds_seen:  # deliveries the consumer credits and deliveries it reads for their kind only
            assert [e.data["kind"] for e in events] == kinds_seen
        for e in events:
            assert violations(e.data, contract) == [], (e.event_type, e.data)


# -- (b) the declared fields are enough ----------------------------------------------------------

def test_a_labour_delivery_with_only_the_declared_fields_is_credited(tmp_path):
    assert set(MINIMAL_DELIVERY) == set(CONTRIBUTION_DELIVERED_CONTRACT["required"])
    volunteers = container(service_app(VOLUNTEERS, COCREATE_DATA_DIR=str(tmp_path)))
    delivered = event("ContributionDelivered", MINIMAL_DELIVERY)
    try:
        with write_transaction(volunteers.store.engine) as connection:
            _project_labour_handlers(volunteers)["ContributionDelivered"](connection, delivered)
        recorded = {e.event_type: e for e in volunteers.store.iterate_all()}
    finally:
        volunteers.store.engine.dispose()
    assert set(recorded) == {"CardRegistered", "ProjectLabourCredited"}  # a card for a contributor without one
    name = recorded["CardRegistered"].data["name"]  # stored sealed with the contributor's key
    assert is_sealed(name) and volunteers.sealer.open(name) == "最小贡献者"
    credited = recorded["ProjectLabourCredited"]
    assert (credited.data["person_id"], credited.data["minutes"], credited.data["project_id"]) == ("v-min", 90, "p-min")
    assert credited.data["project_title"] == ""  # optional: absent here
    assert credited.metadata["causation_id"] == delivered.event_id


def test_a_project_rating_with_only_the_declared_fields_becomes_two_ratings(tmp_path):
    assert set(MINIMAL_RATING) == set(PROJECT_RATED_CONTRACT["required"])
    assert set(MINIMAL_RATING["responsible_unit"]) == set(PROJECT_RATED_CONTRACT["required"]["responsible_unit"])
    feedback = container(service_app(FEEDBACK, COCREATE_DATA_DIR=str(tmp_path)))
    rated = event("ProjectRated", MINIMAL_RATING)
    try:
        with write_transaction(feedback.store.engine) as connection:
            _project_evaluation_handlers(feedback)["ProjectRated"](connection, rated)
        recorded = list(feedback.store.iterate_all())
    finally:
        feedback.store.engine.dispose()
    subjects = {e.data["subject_id"]: e.data for e in recorded if e.event_type == "SubjectRegistered"}
    assert subjects["project-p-min"]["name"] == "p-min"  # the project's id stands in for its title
    assert (subjects["u-min"]["kind"], subjects["u-min"]["name"]) == ("unit", "最小单位")
    ratings = [e.data for e in recorded if e.event_type == "RatingSubmitted"]
    assert sorted(r["subject_id"] for r in ratings) == ["project-p-min", "u-min"]
    assert all(r["level"] == 2 and r["person_id"] == "r-min" for r in ratings)
    assert [e.event_type for e in recorded].count("FollowUpOpened") == 2  # a score of 2 opens a case each


# -- (c) a missing declared field is a poison message -------------------------------------------

CASES = {
    "volunteers": (VOLUNTEERS, CONTRIBUTION_DELIVERED_CONTRACT, MINIMAL_DELIVERY, _project_labour_handlers,
                   "ProjectLabourCredited"),
    "feedback": (FEEDBACK, PROJECT_RATED_CONTRACT, MINIMAL_RATING, _project_evaluation_handlers, "RatingSubmitted"),
}


@pytest.mark.broker
@pytest.mark.parametrize("consumer_service", sorted(CASES))
def test_an_event_missing_a_declared_field_is_dead_lettered_and_the_consumer_goes_on(
        consumer_service, broker, tmp_path, unique):
    definition, contract, minimal, handlers, effect = CASES[consumer_service]
    consumer_side = container(service_app(definition, COCREATE_DATA_DIR=str(tmp_path)))
    topic, group = f"contracts-{unique}.events", f"{consumer_service}.contracts-{unique}"
    ensure_topics(broker.bootstrap, [topic, f"{topic}.dlq"])
    # One event per declared field, each without that field (and each for a contributor or rater
    # of its own, so that every field would be read), then a whole one: the sentinel.
    person = "contributor_id" if "contributor_id" in minimal else "person_id"
    broken = [(path, event(contract["event_type"], without({**minimal, person: f"{minimal[person]}-{n}"}, path), n))
              for n, path in enumerate(paths(contract["required"]), start=1)]
    sentinel = event(contract["event_type"], minimal, version=len(broken) + 1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    try:
        for _path, e in broken:
            producer.send(topic, key=e.stream_id.encode(), value=e.to_json())
        producer.send(topic, key=sentinel.stream_id.encode(), value=sentinel.to_json())
        producer.flush()
    finally:
        producer.close()
    consumer = EventConsumer(engine=consumer_side.store.engine, group_id=group, topics=[topic],
                             handlers=handlers(consumer_side), bootstrap_servers=broker.bootstrap)

    def sentinel_handled() -> bool:
        """The sentinel comes after every broken event on the same partition: once its effect is
        there, the consumer has dealt with each of them."""
        return any(e.metadata.get("causation_id") == sentinel.event_id
                   for e in consumer_side.store.iterate_all() if e.event_type == effect)

    try:
        consume_until(consumer, sentinel_handled, timeout=60,
                      what="the consumer did not get past the broken events to the whole one")
        caused = {e.metadata.get("causation_id") for e in consumer_side.store.iterate_all()}
        effects = count_events(consumer_side.store, effect)
        kept = list_dead_letters(consumer_side.store.engine)
    finally:
        consumer_side.store.engine.dispose()

    assert not caused & {e.event_id for _path, e in broken}, "a broken event had an effect"
    assert effects == (1 if consumer_service == "volunteers" else 2)  # the sentinel's only
    assert [json.loads(row["value"])["event_id"] for row in kept] == [e.event_id for _path, e in broken]
    for (path, _e), row in zip(broken, kept):
        assert (row["group"], row["topic"]) == (group, topic)
        assert row["error"] == f"KeyError: '{path[-1]}'", (path, row["error"])
    on_dlq = read_topic(broker.bootstrap, f"{topic}.dlq", expected=len(broken))
    assert [json.loads(r.value)["event_id"] for r in on_dlq] == [e.event_id for _path, e in broken]
