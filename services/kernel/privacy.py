"""Who sees which field: the platform's one privacy policy, as data.

Every service's routes and read models, and the gateway's live feed, decide what a reader sees
with this module alone (the gateway uses it without importing a service). A reader relates to a
record by a set of *relations*, computed by :func:`relations` from the token and the record:

- ``holder``    the person the record is about: the resident who rated, the card's holder;
- ``rated``     the person a rating (or its follow-up case) rates;
- ``staff``     a cadre, grid worker or admin of the record's community (an admin: any community);
- ``organiser`` the organiser of the activity (for a card: of an activity the holder signed up
                for, in the holder's community);
- ``member``    any token of the record's community (and admins).

A field listed in :data:`FIELDS` is shown to a reader holding one of its ``to`` relations and
none of its ``never`` relations; to everyone else it is masked (phones: ``138****5678``) or
``null``. A field not listed is visible to whoever may read the record at all (its route decides
that: members of the record's community, see :meth:`services.kernel.auth.Principal.require_reader`).

The live feed (``GET /api/v1/live``) applies the same rules to events, and more:
- events of a rating, of a project evaluation or of a follow-up case (:data:`RATING_EVENTS`) go
  individually only to the community's staff who are not the rated person; every other reader
  (residents, the rated person) gets a subject-level ``RatingsChanged`` at most once per
  :data:`SUMMARY_SECONDS`, on a fixed grid, so that timing cannot single out a rater;
- the actor of an event of the feedback service (e.g. a ``SubjectRegistered`` that a first
  project evaluation caused) is a rating's actor: staff only;
- fields marked ``live=False`` (contact details, check-in codes) never enter the feed at all.

**Personal fields** (issue 25, ADR 20) are declared here too, in the same rules: a rule with a
``personal`` purpose (``contact``, ``name``, ``content``) marks a field that is stored sealed with a
key of the person its ``owner`` field names (:mod:`services.kernel.personal`), so that erasing the
person's keys makes every copy unreadable. :data:`PERSONAL` derives, per event type, which fields
those are; :func:`personal_fields` says, for one event, whose key seals each. A personal field every
reader of the record sees has every relation in ``to`` (:data:`EVERYONE`): declaring it personal
changes nothing about who sees it.

Visitors without a token read the public routes (``GET /public/...``, :func:`services.kernel.web.public`),
and they see a record by **allow-list** (:data:`PUBLIC`, :func:`public_view`): only the fields
listed for its kind, so a field added to a read model later stays hidden until it is listed here;
a field holding records names their kind in :data:`PUBLIC_NESTED`. A count of people from 1 to
the service's ``PUBLIC_MIN_COUNT`` - 1 is shown as null and named in the record's ``suppressed``
(:func:`suppress`), and so is a figure resting on it (an average of few ratings); times are
calendar days (:func:`public_day`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from services.kernel.events import LOCAL_TZ, parse_time
from services.kernel.model import mask_phone, role_names

__all__ = [
    "EVENT_KINDS", "FEEDBACK_STREAMS", "FIELDS", "HOLDER", "MEMBER", "ORGANISER", "PUBLIC", "PUBLIC_NESTED",
    "RATED", "RATER", "RATING_EVENTS", "RATING_TIME", "SECRET_EVENTS", "STAFF", "STAFF_ROLES", "SUMMARY_EVENT",
    "SUMMARY_SECONDS", "Visible", "event_kind", "for_admin", "for_feed", "is_rating_event", "live_view",
    "mask_phone", "public_day", "public_view", "rated_subject", "record_of", "redact", "relations", "shown",
    "suppress",
    "EVERYONE", "PERSONAL", "personal_fields",
]

HOLDER, RATED, STAFF, ORGANISER, MEMBER = "holder", "rated", "staff", "organiser", "member"
STAFF_ROLES = role_names("cadre", "grid_worker", "admin")
SUMMARY_SECONDS = 60
SUMMARY_EVENT = "RatingsChanged"


@dataclasses.dataclass(frozen=True)
class Visible:
    """A private field: shown to readers with one of ``to`` and none of ``never``."""

    to: frozenset[str]
    never: frozenset[str] = frozenset()
    mask: str | None = None  # how a hidden value is shown: None (null), "phone" or "day"
    live: bool = True  # False: never carried by the live feed
    # a personal field: stored sealed with a key for this purpose ("contact", "name", "content") of
    # the person the ``owner`` data field names (or, when the event does not carry it, the record's
    # own ``owner``: a follow-up case's person); ``only_if`` = (field, value): personal only when
    # the event's ``field`` holds ``value`` (a pledge's contributor is a resident, not a company)
    personal: str | None = None
    owner: str = "person_id"
    only_if: tuple[str, str] | None = None

    def shown(self, rel: Iterable[str]) -> bool:
        rel = set(rel)
        return bool(rel & self.to) and not rel & self.never


def _visible(to: Iterable[str], never: Iterable[str] = (), **kw) -> Visible:
    return Visible(frozenset(to), frozenset(never), **kw)


EVERYONE = (HOLDER, RATED, STAFF, ORGANISER, MEMBER)  # whoever may read the record at all


def _personal(purpose: str, owner: str = "person_id", **kw) -> Visible:
    """A personal field every reader of the record sees (as before it was declared personal)."""
    return _visible(EVERYONE, personal=purpose, owner=owner, **kw)


RATER = _visible((HOLDER, STAFF), never=(RATED,))
# When a rating was made, to the microsecond, would let the rated person match it with whom they
# met: readers who may not know the rater see the day (China Standard Time) only.
RATING_TIME = _visible((HOLDER, STAFF), never=(RATED,), mask="day")

# record kind -> field -> rule. The kinds: a satisfaction rating (feedback), a follow-up case of a
# bad rating (feedback), a project evaluation (projects' ``ProjectRated``), a volunteer card, an
# activity. ``actor`` stands for the metadata actor of the record's events.
FIELDS: Mapping[str, Mapping[str, Visible]] = {
    "rating": {"person_id": RATER, "actor": RATER, "rated_at": RATING_TIME, "created_at": RATING_TIME,
               "updated_at": RATING_TIME, "comment": _personal("content"),
               "statement": _personal("content", owner="by")},  # an appeal's, by the rated person
    "case": {"person_id": RATER, "actor": RATER, "created_at": RATING_TIME, "updated_at": RATING_TIME,
             # the rater's comment (copied from the rating), the staff's note of the call, the closing
             # comment: about the resident the case follows up (the case's person)
             "comment": _personal("content"), "note": _personal("content")},
    "project_rating": {"person_id": RATER, "actor": RATER, "comment": _personal("content")},
    "feedback_event": {"actor": RATER},
    "card": {"phone": _visible((HOLDER, ORGANISER, STAFF), mask="phone", live=False, personal="contact"),
             "name": _personal("name")},
    "activity": {"checkin_code": _visible((ORGANISER, STAFF), live=False),
                 "volunteers": _visible((ORGANISER, STAFF), live=False)},
    # a participatory budgeting ballot (projects' ``RoundBallotCast``): secret — what a voter
    # approved is shown to that voter alone (not to staff, not on the admin event routes); that
    # they voted, to staff; and the event never reaches the live feed (:data:`SECRET_EVENTS`).
    "round_ballot": {"approvals": _visible((HOLDER,), live=False), "voter_id": _visible((HOLDER, STAFF), live=False),
                     "actor": _visible((HOLDER, STAFF))},
    # personal fields of the other records: who signed up, claimed, was certified, proposed,
    # co-signed, gave an opinion, pledged, was rewarded, reported a problem
    "signup": {"name": _personal("name")},
    "claim": {"reason": _personal("content")},  # the organiser's reason about a volunteer's claim
    "certificate": {"name": _personal("name")},
    "proposal": {"proposer_name": _personal("name", owner="proposer_id")},
    "cosignature": {"name": _personal("name")},
    "opinion": {"name": _personal("name"), "text": _personal("content")},
    "pledge": {"contributor_name": _personal("name", owner="contributor_id", only_if=("contributor_type", "resident")),
               "description": _personal("content", owner="contributor_id", only_if=("contributor_type", "resident")),
               "note": _personal("content", owner="contributor_id", only_if=("contributor_type", "resident"))},
    "reward": {"recipient_name": _personal("name", owner="recipient_id"),
               "reason": _personal("content", owner="recipient_id")},
    "problem": {"description": _personal("content", owner="reported_by")},
    # a resident who maintains a facility (共管) is named; a group is not a person
    "maintainer": {"name": _personal("name", owner="maintainer_id", only_if=("kind", "resident"))},
}

# Events that tell of one rating: (record kind, the data field naming the rated subject).
RATING_EVENTS: Mapping[str, str] = {
    **{name: "rating" for name in ("RatingSubmitted", "RatingRevised", "AppealFiled", "AppealDecided",
                                   "RatingExcluded", "FollowUpLinked", "BurstFlagged", "BurstIncidentOpened",
                                   "BurstIncidentGrew", "BurstReviewed")},
    **{name: "case" for name in ("FollowUpOpened", "ResidentContacted", "RectificationRecorded",
                                 "FollowUpClosed", "FollowUpClosedByExclusion", "FollowUpOverdue")},
    "ProjectRated": "project_rating",
}
# Which kind the other events' fields fall under in the live feed.
EVENT_KINDS: Mapping[str, str] = {
    "CardRegistered": "card", "CardCorrected": "card", "ActivityPublished": "activity",
    "RoundBallotCast": "round_ballot", "VolunteerSignedUp": "signup",
    **{name: "claim" for name in ("ClaimRecorded", "ClaimApproved", "ClaimRejected")},
    "CertificateIssued": "certificate", "ProjectProposed": "proposal", "ProjectCosigned": "cosignature",
    "OpinionPosted": "opinion", "ContributionPledged": "pledge", "ContributionDelivered": "pledge",
    "RewardGranted": "reward", "FundRewardPaid": "reward", "ProblemReported": "problem",
    "MaintainerAssigned": "maintainer",
}
# Events no reader receives on the live feed, in any form: a ballot's stream id names its voter; a
# person's obligations would tell that they gave a bad rating, and their erasure requests are theirs.
SECRET_EVENTS = frozenset({"RoundBallotCast", "ObligationOpened", "ObligationEnded", "ErasureRequested",
                           "PersonErased"})
FEEDBACK_STREAMS = ("subject-", "policy-", "ranking-", "plan-", "rating-", "case-")


def _personal_of_events() -> dict[str, tuple[tuple[str, Visible], ...]]:
    kinds = {**EVENT_KINDS, **RATING_EVENTS}
    found = {}
    for event_type, kind in sorted(kinds.items()):
        fields = tuple((name, rule) for name, rule in FIELDS.get(kind, {}).items() if rule.personal)
        if fields:
            found[event_type] = fields
    return found


# event type -> its personal fields and their rules (derived from FIELDS: not a second list)
PERSONAL: Mapping[str, tuple[tuple[str, Visible], ...]] = _personal_of_events()


def personal_fields(event_type: str, data: Mapping[str, Any],
                    record_owner: str | None = None) -> list[tuple[str, str, str]]:
    """``(field, purpose, person id)`` for each personal field ``data`` holds a value in: the person
    is the one its rule's ``owner`` field names, else ``record_owner`` (the record's own person,
    for events that do not repeat it). A field whose owner is unknown is not listed (an event
    about nobody in particular)."""
    found = []
    for name, rule in PERSONAL.get(event_type, ()):
        value = data.get(name)
        if not isinstance(value, str) or not value:
            continue
        if rule.only_if is not None and data.get(rule.only_if[0]) != rule.only_if[1]:
            continue
        owner = data.get(rule.owner) if isinstance(data.get(rule.owner), str) and data.get(rule.owner) else record_owner
        if owner:
            found.append((name, rule.personal, owner))
    return found


# The data fields that name the person an event is about (beside ``person_id``): the personal
# rules' owners, and a budgeting ballot's voter — not ``by``, which names whoever acted on a case or
# an appeal (staff, a rated cadre), and whose events are about someone else.
_ABOUT_FIELDS = frozenset({"person_id", "voter_id", *(rule.owner for rules in FIELDS.values()
                                                      for rule in rules.values() if rule.personal)}) - {"by"}


def record_of(event_type: str, data: Mapping[str, Any], person_id: str) -> dict[str, Any] | None:
    """What a person's copy of their records (``/me/data``) shows of an event: None unless the event
    is about them (a field of :data:`_ABOUT_FIELDS` names them — a rating *of* them names its rater
    there, not them: ratings received are given as figures only); otherwise its data with every
    personal field of someone else emptied."""
    if not any(data.get(field) == person_id for field in _ABOUT_FIELDS):
        return None
    shown = dict(data)
    owner = data.get("person_id") if isinstance(data.get("person_id"), str) else None
    for name, rule in PERSONAL.get(event_type, ()):
        field_owner = data.get(rule.owner) if isinstance(data.get(rule.owner), str) else owner
        if name in shown and field_owner != person_id:
            shown[name] = None
    return shown


def relations(principal, community_id: str | None, *, holder: str | None = None, rated: str | None = None,
              organisers: Iterable[str] = ()) -> frozenset[str]:
    """The reader's relations to a record of ``community_id``."""
    rel = set()
    admin = "admin" in principal.roles
    member = admin or (principal.community is not None and principal.community == community_id)
    if holder is not None and principal.person_id == holder:
        rel.add(HOLDER)
    if rated is not None and principal.person_id == rated:
        rel.add(RATED)
    if member:
        rel.add(MEMBER)
        if principal.roles & set(STAFF_ROLES):
            rel.add(STAFF)
        if principal.person_id in set(organisers):
            rel.add(ORGANISER)
    return frozenset(rel)


def shown(kind: str, field: str, rel: Iterable[str]) -> bool:
    rule = FIELDS.get(kind, {}).get(field)
    return rule is None or rule.shown(rel)


def _hidden(rule: Visible, value: Any) -> Any:
    if rule.mask == "phone" and isinstance(value, str):
        return mask_phone(value)
    if rule.mask == "day" and isinstance(value, str):
        try:
            return parse_time(value).astimezone(LOCAL_TZ).date().isoformat()
        except ValueError:
            return None
    return None


def redact(kind: str, record: Mapping[str, Any], rel: Iterable[str]) -> dict[str, Any]:
    """``record`` as a reader with ``rel`` may see it."""
    rel = frozenset(rel)
    out = dict(record)
    for field, rule in FIELDS.get(kind, {}).items():
        if field in out and not rule.shown(rel):
            out[field] = _hidden(rule, out[field])
    return out


def event_kind(event_type: str, stream_id: str) -> str | None:
    if event_type in RATING_EVENTS:
        return RATING_EVENTS[event_type]
    if event_type in EVENT_KINDS:
        return EVENT_KINDS[event_type]
    if stream_id.startswith(FEEDBACK_STREAMS):
        return "feedback_event"
    return None


def for_feed(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """An event as the live feed keeps it: the fields that never enter the feed removed."""
    kind = event_kind(envelope["event_type"], envelope["stream_id"])
    out = dict(envelope)
    rules = FIELDS.get(kind or "", {})
    out["data"] = {k: v for k, v in envelope["data"].items() if k not in rules or rules[k].live}
    return out


def for_admin(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """An event as the admin event routes (``/events``, ``/streams/<id>/events``) show it: what the
    policy shows staff of the event's community (a ballot's approvals: nobody but its voter)."""
    kind = event_kind(envelope["event_type"], envelope["stream_id"])
    if kind is None:
        return dict(envelope)
    return {**envelope, "data": redact(kind, envelope["data"], {STAFF, MEMBER})}


def is_rating_event(event_type: str) -> bool:
    return event_type in RATING_EVENTS


def rated_subject(event_type: str, data: Mapping[str, Any], stream_id: str) -> str | None:
    """The subject a rating event is about (``project-<id>`` for a project evaluation)."""
    if event_type == "ProjectRated":
        return f"project-{data.get('project_id') or stream_id.split('-', 1)[-1]}"
    subject = data.get("subject_id")
    return subject if isinstance(subject, str) else None


def live_view(envelope: Mapping[str, Any], rel: Iterable[str]) -> dict[str, Any] | None:
    """What a reader with ``rel`` (relations to the event's community and its rated person)
    receives of a feed event: the event with private fields hidden, or None (a rating event for a
    reader who gets only the subject-level summary)."""
    rel = frozenset(rel)
    if envelope["event_type"] in SECRET_EVENTS:
        return None
    kind = event_kind(envelope["event_type"], envelope["stream_id"])
    if envelope["event_type"] in RATING_EVENTS and not (STAFF in rel and RATED not in rel):
        return None
    if kind is None:
        return dict(envelope)
    out = dict(envelope)
    out["data"] = redact(kind, envelope["data"], rel)
    rules = FIELDS.get(kind, {})
    if "actor" in rules and not rules["actor"].shown(rel):
        out["metadata"] = {k: v for k, v in envelope.get("metadata", {}).items() if k != "actor"}
    return out


# -- what visitors without a token see: the public reads -------------------------------------------
#
# Every public answer is a record of one of these kinds, and shows only the fields listed for it.
# Nothing here names a person: no person ids, no names of residents, contributors, raters or
# maintainers, no phones, no opinion, comment, problem or maintenance texts, no receipt or donation
# notes. Subjects of a ranking are public officials and bodies (cadres, grid workers, units,
# services, projects): their display name and unit are public, their person ids are not.
# ``suppressed`` (in records holding counts) names the counts, and the figures resting on them,
# that are shown as null because they are small (:func:`suppress`).
_AMOUNTS = ("labour_minutes", "skills_minutes", "money_fen", "materials_fen")
_SUMMARY = ("project_id", "community_id", "grid_id", "grid_name", "title", "category", "category_label", "stage",
            "stage_label", "phase", "phase_label", "progress", "estimated_cost_fen", "requested_fen", "counts",
            "created_on", "updated_on")
PUBLIC: Mapping[str, tuple[str, ...]] = {
    # projects service
    "community": ("community_id", "name", "district", "grids", "stages", "categories"),
    "grid": ("grid_id", "name"),
    "option": ("value", "label"),  # a stage or a category to filter by, with its label
    "label": ("zh", "en"),
    "project_page": ("community_id", "items", "total", "page", "per_page", "min_count"),
    "project_summary": _SUMMARY,
    "project_counts": ("cosignatures", "pledges", "contributors", "suppressed"),
    "project": (*_SUMMARY, "description", "location", "timeline", "milestones", "budget", "contributions", "vote",
                "evaluation", "results", "completed_on", "min_count"),
    "stage_entry": ("stage", "label", "entered_on"),
    "milestone": ("progress", "note", "recorded_on"),
    "budget": ("estimated_cost_fen", "requested_fen", "reserved_fen", "spent_fen", "rewards_fen"),
    "contributions": ("pledged", "delivered"),
    "amounts": _AMOUNTS,
    "vote": ("status", "result", "quorum_met", "electorate_size", "quorum_required", "ballots", "yes", "no",
             "abstain", "opened_on", "closed_on", "suppressed"),
    "evaluation": ("status", "responsible_unit", "ratings", "average", "opened_on", "closed_on", "suppressed"),
    "unit": ("unit_id", "name"),
    "results": ("benefits", "volunteer_minutes", "contributions", "by_contributor_type", "contributors", "spent_fen",
                "published_on", "suppressed"),
    "contributor_types": ("resident", "enterprise", "social_organisation"),
    "fund": ("community_id", "balance_fen", "credited_fen", "reserved_fen", "spent_fen", "released_fen",
             "rewards_fen", "ledger", "next_after"),
    "fund_entry": ("position", "kind", "kind_label", "source", "source_label", "amount_fen", "balance_after_fen",
                   "project_id", "project_title", "on"),
    # projects service: participatory budgeting rounds (never a ballot: counts only)
    "round_page": ("community_id", "items", "min_count"),
    "round_summary": ("round_id", "community_id", "title", "status", "status_label", "budget_fen", "rule",
                      "rule_label", "proposal_count", "ballots", "opens_on", "closes_on", "suppressed"),
    "round": ("round_id", "community_id", "title", "status", "status_label", "budget_fen", "rule", "rule_label",
              "tie_break", "proposal_count", "proposals", "ballots", "opens_on", "closes_on", "outcome", "min_count",
              "suppressed"),
    "round_proposal": ("project_id", "title", "cost_fen", "order"),
    "round_outcome": ("spent_fen", "leftover_fen", "closed_on", "winners", "explanations"),
    "round_winner": ("rank", "project_id", "title", "cost_fen", "approvals", "stage", "suppressed"),
    "round_explanation": ("project_id", "title", "won", "result", "rank", "cost_fen", "approvals", "label",
                          "suppressed"),
    # feedback service
    "ranking": ("community_id", "kind", "period", "provisional", "edition", "editions", "published_on", "formula",
                "ranked", "not_enough_ratings", "total_ranked", "total_not_enough_ratings", "limit", "offset",
                "min_count"),
    "formula": ("version", "prior_mean", "prior_weight", "min_ratings", "text"),
    "ranking_entry": ("rank", "name", "unit_id", "project_id", "ratings", "score", "average", "satisfaction_rate",
                      "suppressed"),
    # open data (services/kernel/open_data.py): one kind per file, its columns in this order. Rows
    # hold plain values only; ``suppressed`` names the empty cells that hide a small count of people
    # (and the figures resting on it), space-separated. Organisations that contributed to a project
    # are named (``organisation``); residents never: they are one aggregate row per project.
    "open_project": ("community_id", "project_id", "title", "category", "category_zh", "category_en", "grid_id",
                     "grid_name", "stage", "stage_zh", "stage_en", "phase", "progress", "estimated_cost_fen",
                     "requested_fen", "reserved_fen", "spent_fen", "rewards_fen", *_AMOUNTS, "cosignatures",
                     "pledges", "contributors", "vote_result", "created_on", "decided_on", "completed_on",
                     "results_published_on", "updated_on", "suppressed"),
    "open_fund_entry": ("community_id", "position", "on", "kind", "kind_zh", "kind_en", "source", "source_zh",
                        "source_en", "amount_fen", "balance_after_fen", "project_id", "project_title"),
    "open_results": ("community_id", "project_id", "project_title", "published_on", "benefits", "volunteer_minutes",
                     *_AMOUNTS, "spent_fen", "rewards_fen", "contributors", "evaluation_ratings",
                     "evaluation_average", "suppressed"),
    "open_rewards": ("community_id", "project_id", "project_title", "contributor_type", "contributor_type_zh",
                     "contributor_type_en", "organisation", "contributors", *_AMOUNTS, "rewarded", "rewards_fen",
                     "suppressed"),
    "open_ranking_entry": ("community_id", "kind", "role_zh", "role_en", "period", "edition", "provisional",
                           "published_on", "formula_version", "min_ratings", "rank", "name", "unit_id", "unit_name",
                           "project_id", "ratings", "score", "average", "satisfaction_rate", "suppressed"),
    "open_volunteer_month": ("community_id", "month", "minutes", "hours", "volunteers", "suppressed"),
    # volunteers service: a presented certificate checked (match or not per presented part, no stored value)
    "certificate_check": ("valid", "match"),
    "certificate_match": ("value", "holder", "card_number", "period_from", "period_to", "issued_on",
                          "issuing_organisation", "total_minutes", "total_hours", "entries"),
}
# kind -> field -> the kind of the record (or of each record of the list) the field holds.
PUBLIC_NESTED: Mapping[str, Mapping[str, str]] = {
    "community": {"grids": "grid", "stages": "option", "categories": "option"},
    "option": {"label": "label"},
    "project_page": {"items": "project_summary"},
    "project_summary": {"category_label": "label", "stage_label": "label", "phase_label": "label",
                        "counts": "project_counts"},
    "project": {"category_label": "label", "stage_label": "label", "phase_label": "label", "counts": "project_counts",
                "timeline": "stage_entry", "milestones": "milestone", "budget": "budget",
                "contributions": "contributions", "vote": "vote", "evaluation": "evaluation", "results": "results"},
    "stage_entry": {"label": "label"},
    "contributions": {"pledged": "amounts", "delivered": "amounts"},
    "evaluation": {"responsible_unit": "unit"},
    "results": {"contributions": "amounts", "by_contributor_type": "contributor_types"},
    "contributor_types": {"resident": "amounts", "enterprise": "amounts", "social_organisation": "amounts"},
    "fund": {"ledger": "fund_entry"},
    "fund_entry": {"kind_label": "label", "source_label": "label"},
    "ranking": {"formula": "formula", "ranked": "ranking_entry", "not_enough_ratings": "ranking_entry"},
    "round_page": {"items": "round_summary"},
    "round_summary": {"status_label": "label", "rule_label": "label"},
    "round": {"status_label": "label", "rule_label": "label", "proposals": "round_proposal",
              "outcome": "round_outcome"},
    "round_outcome": {"winners": "round_winner", "explanations": "round_explanation"},
    "round_explanation": {"label": "label"},
    "certificate_check": {"match": "certificate_match"},
}


def public_view(kind: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` as a visitor without a token sees it: the fields :data:`PUBLIC` lists for
    ``kind`` (in that order; those the record lacks are left out), records within it kept to
    their own kinds' lists. A mapping in a field that :data:`PUBLIC_NESTED` does not declare is
    a TypeError — a programming error, never a field shown whole."""
    nested = PUBLIC_NESTED.get(kind, {})
    return {name: _public_value(kind, name, nested.get(name), record[name]) for name in PUBLIC[kind]
            if name in record}


def _public_value(kind: str, name: str, nested: str | None, value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, Mapping):
        if nested is None:
            raise TypeError(f"{kind}.{name} holds a record: declare its kind in PUBLIC_NESTED")
        return public_view(nested, value)
    if isinstance(value, (list, tuple)):
        return [_public_value(kind, name, nested, item) for item in value]
    raise TypeError(f"{kind}.{name} holds a {type(value).__name__}, which a public answer cannot show")


def suppress(counts: Mapping[str, int | None], min_count: int, *,
             together: bool = False) -> tuple[dict[str, int | None], list[str]]:
    """Counts of people as a public answer shows them, and the names of those suppressed: a count
    from 1 to ``min_count`` - 1 is None (0 is shown: it names nobody). ``together``: the counts
    are the parts of one whole (a vote's yes, no and abstain), so that when one is suppressed all
    are — one could be worked out from the others and the whole."""
    small = [name for name, value in counts.items() if value is not None and 0 < value < min_count]
    if together and small:
        small = list(counts)
    return {name: None if name in small else value for name, value in counts.items()}, small


def public_day(instant: str | None) -> str | None:
    """An instant (ISO 8601) as a public answer shows it: the calendar day in China Standard Time."""
    if not instant:
        return None
    try:
        return parse_time(instant).astimezone(LOCAL_TZ).date().isoformat()
    except ValueError:
        return None
