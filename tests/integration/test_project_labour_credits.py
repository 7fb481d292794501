"""Labour delivered to a project reaches the volunteer card through the real broker, exactly once.

The projects service records deliveries through its API; its real relay publishes them to a topic
of a real broker (tansu); the volunteers service's real consumer credits the contributor's card
(creating a card for a contributor without one). The same records sent again change nothing.
"""

from __future__ import annotations

import pytest
from kafka import KafkaProducer

from services.kernel.consumer import EventConsumer
from services.kernel.relay import Relay
from services.projects.service import DEFINITION as PROJECTS
from services.volunteers.service import DEFINITION as VOLUNTEERS
from services.volunteers.service import _project_labour_handlers
from tests.support.apps import container, driver, service_app
from tests.support.broker import committed_to_end
from tests.support.consumers import consume_until, count_events
from tests.support.projects import Community, Person

pytestmark = pytest.mark.broker


def test_labour_delivered_is_credited_once_even_when_redelivered(broker, tmp_path, unique):
    projects_app = service_app(PROJECTS, COCREATE_DATA_DIR=str(tmp_path / "projects"))
    volunteers_app = service_app(VOLUNTEERS, COCREATE_DATA_DIR=str(tmp_path / "volunteers"))
    projects, volunteers = container(projects_app), container(volunteers_app)
    d, v = driver(projects_app), driver(volunteers_app)
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
    # Every record of the topic handled (the group committed its end), not just the three credits
    # seen: a second credit, if there were one, would be there by then.
    consume_until(consumer, lambda: count_events(volunteers.store, "ProjectLabourCredited") >= 3
                  and committed_to_end(broker.bootstrap, group, topic), timeout=120)

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
    consume_until(consumer, lambda: committed_to_end(broker.bootstrap, group, topic))
    assert count_events(volunteers.store, "ProjectLabourCredited") == marker_before == 3
    assert count_events(volunteers.store, "CardRegistered") == 2
    assert v.get(worker, f"/projects/{pid}/minutes")["minutes"] == 390

