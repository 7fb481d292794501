"""Labour delivered to a project reaches the volunteer card through the real broker, exactly once.

The projects service records deliveries through its API; its real relay publishes them to a topic
of a real broker (tansu); the volunteers service's real consumer credits the contributor's card
(creating a card for a contributor without one). The same records sent again change nothing.
"""

from __future__ import annotations

import threading
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from services.kernel.consumer import EventConsumer
from services.kernel.eventstore import EventStore
from services.kernel.relay import Relay
from services.kernel.service import create_service_app, load_settings
from services.projects.service import DEFINITION as PROJECTS
from services.volunteers.service import DEFINITION as VOLUNTEERS
from services.volunteers.service import _project_labour_handlers
from tests.conftest import TEST_SECRET
from tests.support.projects import Community, FlaskClient, Person, ProjectsDriver

pytestmark = pytest.mark.broker


def service_app(definition, tmp_path, name):
    settings = load_settings(definition, environ={"COCREATE_JWT_SECRET": TEST_SECRET,
                                                  "COCREATE_DATA_DIR": str(tmp_path / name)})
    app = create_service_app(definition, settings)
    return app, app.extensions["cocreate.container"]


def count_events(store: EventStore, event_type: str) -> int:
    return sum(1 for e in store.iterate_all() if e.event_type == event_type)


def consume_until(consumer: EventConsumer, condition, settle: float = 0.0, timeout: float = 60.0) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not condition():
            time.sleep(0.1)
        time.sleep(settle)  # let anything extra (a second credit) arrive if it were going to
    finally:
        stop.set()
        thread.join(timeout=30)
    assert condition(), "the consumer did not credit the card in time"


def test_labour_delivered_is_credited_once_even_when_redelivered(broker, tmp_path, unique):
    projects_app, projects = service_app(PROJECTS, tmp_path, "projects")
    volunteers_app, volunteers = service_app(VOLUNTEERS, tmp_path, "volunteers")
    d = ProjectsDriver(FlaskClient(projects_app.test_client()))
    v = ProjectsDriver(FlaskClient(volunteers_app.test_client()))
    c = Community(d, f"c{unique[:8]}")
    project = c.approved_project(title="清理河道")
    pid = project["project_id"]
    worker, helper = c.residents[3], c.residents[4]
    # One contributor already has a card, the other gets one from the first credit.
    v.post(Person(worker.person_id, worker.name, ("resident",), c.id), "/cards", {"phone": "13900001111"})
    pledges = {p.person_id: d.post(p, f"/projects/{pid}/pledges", {"kind": "labour", "labour_minutes": 240})["created_id"]
               for p in (worker, helper)}
    money = d.post(c.residents[5], f"/projects/{pid}/pledges", {"kind": "money", "money_fen": 50_000})["created_id"]
    for minutes in (120, 90):
        d.post(c.grid_worker, f"/projects/{pid}/pledges/{pledges[worker.person_id]}/deliveries",
               {"labour_minutes": minutes})
    d.post(c.grid_worker, f"/projects/{pid}/pledges/{pledges[helper.person_id]}/deliveries", {"labour_minutes": 180})
    d.post(c.grid_worker, f"/projects/{pid}/pledges/{money}/deliveries", {"money_fen": 50_000})

    topic = f"projects-{unique}.events"
    relay = Relay(projects.store, topic=topic, bootstrap_servers=broker.bootstrap, batch_size=50)
    while relay.publish_once() > 0:
        pass
    group = f"volunteers.project-labour-{unique}"
    consumer = EventConsumer(engine=volunteers.store.engine, group_id=group, topics=[topic],
                             handlers=_project_labour_handlers(volunteers), bootstrap_servers=broker.bootstrap)
    consume_until(consumer, lambda: count_events(volunteers.store, "ProjectLabourCredited") >= 3, settle=1.0)

    card = v.get(worker, f"/cards/{worker.person_id}")
    assert card["approved_minutes"] == 210 and card["points_balance"] == 210 * 10 // 60
    assert card["phone"] == "13900001111"
    new_card = v.get(helper, "/me/card")
    assert new_card["card"]["registered_via"] == "project" and new_card["card"]["approved_minutes"] == 180
    assert [credit["source_id"] for credit in new_card["credits"]] == [pid]
    assert v.get(worker, f"/projects/{pid}/minutes")["minutes"] == 390

    # Redelivery: the relay's records sent again (as after a relay crash) and a second consumer
    # pass over the same group: no second credit, no second card.
    records = [e for e in projects.store.iterate_all() if e.event_type == "ContributionDelivered"]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for event in records:
        producer.send(topic, key=event.stream_id.encode(), value=event.to_json())
    producer.flush()
    producer.close()
    marker_before = count_events(volunteers.store, "ProjectLabourCredited")
    consumer = EventConsumer(engine=volunteers.store.engine, group_id=group, topics=[topic],
                             handlers=_project_labour_handlers(volunteers), bootstrap_servers=broker.bootstrap)
    consume_until(consumer, lambda: caught_up(broker.bootstrap, group, topic))
    assert count_events(volunteers.store, "ProjectLabourCredited") == marker_before == 3
    assert count_events(volunteers.store, "CardRegistered") == 2
    assert v.get(worker, f"/projects/{pid}/minutes")["minutes"] == 390


def caught_up(bootstrap: str, group: str, topic: str) -> bool:
    """The group has committed offsets up to the end of every partition of the topic."""
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        ends = reader.end_offsets(partitions)
        return all(end == 0 or (reader.committed(tp) or 0) >= end for tp, end in ends.items())
    finally:
        reader.close()
