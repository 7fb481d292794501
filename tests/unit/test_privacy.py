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


# -- personal fields (issue 25): declared in the same rules, derived per event type ----------------

# What the issue names as personal (contact details, names, free text that may identify a person),
# event by event: the oracle the policy's derived PERSONAL is checked against.
EXPECTED_PERSONAL = {
    "CardRegistered": {"phone": "contact", "name": "name"},
    "CardCorrected": {"phone": "contact", "name": "name"},
    "VolunteerSignedUp": {"name": "name"},
    "ClaimRecorded": {"reason": "content"}, "ClaimApproved": {"reason": "content"},
    "ClaimRejected": {"reason": "content"},
    "CertificateIssued": {"name": "name"},
    "ProjectProposed": {"proposer_name": "name"},
    "ProjectCosigned": {"name": "name"},
    "OpinionPosted": {"name": "name", "text": "content"},
    "ContributionPledged": {"contributor_name": "name", "description": "content", "note": "content"},
    "ContributionDelivered": {"contributor_name": "name", "description": "content", "note": "content"},
    "RewardGranted": {"recipient_name": "name", "reason": "content"},
    "FundRewardPaid": {"recipient_name": "name", "reason": "content"},
    "MaintainerAssigned": {"name": "name"},  # a resident's only (kind "resident")
    "ProblemReported": {"description": "content"},
    "ProjectRated": {"comment": "content"},
}


def test_every_personal_field_is_declared_in_the_one_policy():
    for event_type, fields in EXPECTED_PERSONAL.items():
        assert {name: rule.personal for name, rule in privacy.PERSONAL[event_type]} == fields, event_type
    for event_type in ("RatingSubmitted", "RatingRevised", "AppealFiled"):  # rating events
        assert {name for name, _ in privacy.PERSONAL[event_type]} == {"comment", "statement"}, event_type
    for event_type in ("FollowUpOpened", "ResidentContacted", "FollowUpClosed"):  # a follow-up case's
        assert {name for name, _ in privacy.PERSONAL[event_type]} == {"comment", "note"}, event_type
    assert "RoundBallotCast" not in privacy.PERSONAL  # secret, but not personal text: ids only
    assert all(rule.personal in ("contact", "name", "content")
               for fields in privacy.PERSONAL.values() for _, rule in fields)


def test_declaring_a_field_personal_changes_nobody_s_view_of_it():
    """Fields every reader of a record saw before are still seen by every reader: a reader with
    any one relation to the record (the phone keeps its own rule)."""
    for kind, fields in privacy.FIELDS.items():
        for name, rule in fields.items():
            if rule.personal and name != "phone":
                assert all(rule.shown({relation}) for relation in privacy.EVERYONE), (kind, name)
                assert rule.live, (kind, name)
    card = {"person_id": "res1", "name": "王芳", "phone": "13800138000"}
    assert privacy.redact("card", card, {"member"}) == {**card, "phone": "138****8000"}
    assert privacy.redact("rating", RATING, {"member", "rated", "staff"})["comment"] == "态度差"


def test_each_personal_field_is_sealed_with_its_owners_key():
    opinion = {"project_id": "p1", "person_id": "res1", "name": "王芳", "text": "支持", "stance": "support"}
    assert privacy.personal_fields("OpinionPosted", opinion) == [("name", "name", "res1"), ("text", "content", "res1")]
    appeal = {"rating_id": "r1", "statement": "我没有收到通知", "by": "cadre1"}
    assert privacy.personal_fields("AppealFiled", appeal) == [("statement", "content", "cadre1")]
    # a follow-up case's later events do not repeat the resident: the case's own person seals them
    assert privacy.personal_fields("ResidentContacted", {"case_id": "c1", "note": "已电话沟通", "by": "staff1"},
                                   record_owner="res1") == [("note", "content", "res1")]
    assert privacy.personal_fields("ResidentContacted", {"case_id": "c1", "note": "已电话沟通"}) == []
    # a company's pledge names the company, not a person; an empty comment tells nothing
    company = {"contributor_id": "e1", "contributor_type": "enterprise", "contributor_name": "某公司",
               "description": "捐赠材料"}
    assert privacy.personal_fields("ContributionPledged", company) == []
    assert privacy.personal_fields("ContributionPledged", {**company, "contributor_type": "resident"}) == [
        ("contributor_name", "name", "e1"), ("description", "content", "e1")]
    maintainer = {"maintainer_id": "res4", "kind": "resident", "name": "郑丽华", "duty": "每周清扫"}
    assert privacy.personal_fields("MaintainerAssigned", maintainer) == [("name", "name", "res4")]
    assert privacy.personal_fields("MaintainerAssigned", {**maintainer, "kind": "group", "name": "护河队"}) == []
    assert privacy.personal_fields("ProjectRated", {"person_id": "res1", "comment": "", "score": 5}) == []
    assert privacy.personal_fields("ProjectQualified", {"project_id": "p1"}) == []


def test_a_persons_records_are_the_events_about_them_with_nobody_elses_personal_fields():
    """``/me/data/<service>``: an event is in a person's copy when it names them as its person,
    proposer, contributor, recipient, reporter or voter — a rating of a cadre names its rater, so
    the cadre never gets it — and another person's personal fields in it read null."""
    rating = {"rating_id": "r1", "person_id": "res1", "subject_person_id": "cadre-1", "comment": "路灯坏了",
              "level": 2}
    assert privacy.record_of("RatingSubmitted", rating, "res1") == rating
    assert privacy.record_of("RatingSubmitted", rating, "cadre-1") is None
    pledge = {"pledge_id": "p1", "contributor_id": "res2", "contributor_type": "resident", "contributor_name": "黄志明",
              "description": "砌墙", "confirmed_by": "grid-1"}
    assert privacy.record_of("ContributionPledged", pledge, "res2") == pledge
    assert privacy.record_of("ContributionPledged", pledge, "grid-1") is None
    appeal = {"rating_id": "r1", "statement": "我没有见过这位居民", "by": "cadre-1"}
    assert privacy.record_of("AppealFiled", appeal, "cadre-1") is None  # "by" names who acted, not whom it is about
    reward = {"recipient_id": "res3", "recipient_name": "陈美玲", "reason": "清理河道", "person_id": "cadre-9"}
    assert privacy.record_of("RewardGranted", reward, "res3") == reward
    assert privacy.record_of("RewardGranted", reward, "cadre-9") == {**reward, "recipient_name": None, "reason": None}
    assert privacy.record_of("RoundBallotCast", {"voter_id": "rep1", "approvals": ["x"]}, "rep1") is not None
