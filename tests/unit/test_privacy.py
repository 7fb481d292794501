"""The privacy policy as data (services/kernel/privacy.py): relations, fields, the live feed."""

from __future__ import annotations

from services.kernel import privacy
from services.kernel.auth import Principal


def who(person_id: str, *roles: str, community: str | None = "anhai") -> Principal:
    return Principal(person_id, person_id, frozenset(roles), community)


RATING = {"rating_id": "r1", "person_id": "res1", "level": 1, "comment": "态度差",
          "rated_at": "2026-12-03T17:30:05.123456Z", "created_at": "2026-12-03T17:30:05.123456Z"}


def test_relations_follow_the_token_and_the_record():
    assert privacy.relations(who("res1", "resident"), "anhai", holder="res1") == {"holder", "member"}
    assert privacy.relations(who("c1", "cadre"), "anhai", rated="c1") == {"rated", "member", "staff"}
    assert privacy.relations(who("g1", "grid_worker"), "anhai") == {"member", "staff"}
    assert privacy.relations(who("c2", "cadre", community="binhai"), "anhai") == frozenset()
    assert privacy.relations(who("a", "admin", community=None), "anhai") == {"member", "staff"}
    assert privacy.relations(who("o1", "organiser"), "anhai", organisers=["o1"]) == {"member", "organiser"}
    assert privacy.relations(who("o1", "organiser", community="binhai"), "anhai", organisers=["o1"]) == frozenset()


def test_a_rating_as_each_reader_sees_it():
    staff = privacy.redact("rating", RATING, {"staff", "member"})
    assert staff == RATING
    rated = privacy.redact("rating", RATING, {"staff", "member", "rated"})
    assert (rated["person_id"], rated["level"], rated["comment"]) == (None, 1, "态度差")
    assert (rated["rated_at"], rated["created_at"]) == ("2026-12-04", "2026-12-04")  # the day in China
    assert privacy.redact("rating", RATING, {"holder", "member"}) == RATING


def test_phones_are_masked_and_check_in_codes_hidden():
    card = {"person_id": "v1", "phone": "13912345678"}
    assert privacy.redact("card", card, {"member"})["phone"] == "139****5678"
    assert privacy.redact("card", card, {"member", "organiser"})["phone"] == "13912345678"
    activity = {"activity_id": "a1", "checkin_code": "483920", "volunteers": ["v1"]}
    assert privacy.redact("activity", activity, {"member"}) == {"activity_id": "a1", "checkin_code": None,
                                                                 "volunteers": None}


def test_the_live_feed_keeps_contacts_out_and_rating_events_for_unrated_staff():
    card = {"event_type": "CardRegistered", "stream_id": "card-v1", "data": {"phone": "139", "name": "甲"},
            "metadata": {"actor": "v1"}}
    assert privacy.for_feed(card)["data"] == {"name": "甲"}
    rated = {"event_type": "RatingSubmitted", "stream_id": "rating-r1", "data": dict(RATING),
             "metadata": {"actor": "res1"}}
    assert privacy.live_view(rated, {"member"}) is None
    assert privacy.live_view(rated, {"member", "staff", "rated"}) is None
    assert privacy.live_view(rated, {"member", "staff"})["data"]["person_id"] == "res1"
    registered = {"event_type": "SubjectRegistered", "stream_id": "subject-jsb", "data": {"name": "街道建设办"},
                  "metadata": {"actor": "res1", "correlation_id": "c"}}
    assert privacy.live_view(registered, {"member"})["metadata"] == {"correlation_id": "c"}
    assert privacy.live_view(registered, {"member", "staff"})["metadata"]["actor"] == "res1"
    proposed = {"event_type": "ProjectProposed", "stream_id": "project-p1", "data": {"title": "路灯"},
                "metadata": {"actor": "res2"}}
    assert privacy.live_view(proposed, {"member"}) == proposed
