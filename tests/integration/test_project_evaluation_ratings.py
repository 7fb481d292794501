"""Project evaluations (共评) become ratings in the feedback service through the real broker, once.

The projects service records residents' evaluations through its API; its real relay publishes
them to a topic of a real broker (tansu); the feedback service's real consumer turns each
``ProjectRated`` into a rating of the project and of its responsible unit (registering both as
subjects), and a score of 1 or 2 opens a follow-up case. The same records sent again change nothing.
"""

from __future__ import annotations

import pytest
from kafka import KafkaProducer

from services.feedback.service import DEFINITION as FEEDBACK
from services.feedback.service import _project_evaluation_handlers
from services.kernel.consumer import EventConsumer
from services.kernel.relay import Relay
from services.projects.service import DEFINITION as PROJECTS
from tests.support.apps import container, driver, service_app
from tests.support.broker import committed_to_end
from tests.support.consumers import consume_until, count_events
from tests.support.projects import Community, Person

pytestmark = pytest.mark.broker


def test_project_ratings_become_feedback_ratings_once_even_when_redelivered(broker, tmp_path, unique):
    projects_app = service_app(PROJECTS, COCREATE_DATA_DIR=str(tmp_path / "projects"))
    feedback_app = service_app(FEEDBACK, COCREATE_DATA_DIR=str(tmp_path / "feedback"))
    projects, feedback = container(projects_app), container(feedback_app)
    d, fb = driver(projects_app), driver(feedback_app)
    c = Community(d, f"c{unique[:8]}")
    unit = {"unit_id": f"jsb-{unique[:6]}", "name": "街道建设办"}
    pid = c.project_in_evaluation(unit)
    scores = (5, 4, 4, 2, 1)
    for person, score in zip(c.residents, scores):
        d.post(person, f"/projects/{pid}/evaluation/ratings", {"score": score, "comment": f"评分 {score}"})

    topic = f"projects-{unique}.events"
    relay = Relay(projects.store, topic=topic, bootstrap_servers=broker.bootstrap, batch_size=50)
    while relay.publish_once() > 0:
        pass
    group = f"feedback.project-evaluations-{unique}"

    def consumer():
        return EventConsumer(engine=feedback.store.engine, group_id=group, topics=[topic],
                             handlers=_project_evaluation_handlers(feedback), bootstrap_servers=broker.bootstrap)

    # Every record of the topic handled (the group committed its end), not just the ratings seen:
    # a third rating of an evaluation, if there were one, would be there by then.
    consume_until(consumer(), lambda: count_events(feedback.store, "RatingSubmitted") >= 2 * len(scores)
                  and committed_to_end(broker.bootstrap, group, topic))

    cadre = Person(f"{c.id}-cadre", "社区干部", ("cadre",), c.id)
    project_subject = fb.get(cadre, f"/subjects/project-{pid}")
    unit_subject = fb.get(cadre, f"/subjects/{unit['unit_id']}")
    assert (project_subject["kind"], project_subject["name"], project_subject["registered_via"]) == (
        "project", "背街小巷路灯", "project_evaluation")
    assert (unit_subject["kind"], unit_subject["name"], unit_subject["community_id"]) == ("unit", "街道建设办", c.id)
    for subject in (project_subject, unit_subject):
        figures = subject["figures"]
        assert figures["ratings"] == 5 and figures["levels"] == {"5": 1, "4": 2, "3": 0, "2": 1, "1": 1}
        assert figures["average"] == "3.2000" and figures["satisfaction_rate"] == "0.6000"
    # Two bad scores x two subjects: four follow-up cases, each naming the resident to handlers.
    cases = fb.get(cadre, f"/cases?community_id={c.id}")
    assert cases["open"] == 4
    assert sorted(case["person_id"] for case in cases["items"]) == sorted(
        [c.residents[3].person_id, c.residents[4].person_id] * 2)
    mine = fb.get(c.residents[4], "/me/ratings")["items"]
    assert {(r["subject_id"], r["level"], r["source"]["kind"]) for r in mine} == {
        (f"project-{pid}", 1, "project_evaluation"), (unit["unit_id"], 1, "project_evaluation")}
    assert all(r["case"]["status"] == "open" for r in mine)

    # Redelivery: the same records again, and a second consumer pass over the same group.
    records = [e for e in projects.store.iterate_all() if e.event_type == "ProjectRated"]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for event in records:
        producer.send(topic, key=event.stream_id.encode(), value=event.to_json())
    producer.flush()
    producer.close()
    consume_until(consumer(), lambda: committed_to_end(broker.bootstrap, group, topic))
    assert count_events(feedback.store, "RatingSubmitted") == 10
    assert count_events(feedback.store, "SubjectRegistered") == 2
    assert count_events(feedback.store, "FollowUpOpened") == 4
    assert fb.get(cadre, f"/subjects/{unit['unit_id']}")["figures"]["ratings"] == 5
    # Nothing the evaluations caused names a rater as its actor (subjects are public).
    raters = {p.person_id for p in c.residents}
    caused = [e for e in feedback.store.iterate_all() if e.metadata.get("causation_id")]
    assert {e.event_type for e in caused} >= {"SubjectRegistered", "RatingSubmitted", "FollowUpOpened"}
    assert not [e.event_type for e in caused if e.metadata.get("actor") in raters]
