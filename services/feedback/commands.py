"""The feedback service's commands: what a caller asks, as frozen data (one handler each).

HTTP routes load them with their schemas (:mod:`services.feedback.api`); the project-evaluation
consumer builds :class:`RecordProjectEvaluation` from a ``ProjectRated`` event; the periodic job
``python -m services.feedback sweep-overdue`` sends :class:`CloseCasesOfExcludedRatings` and
:class:`SweepOverdue`. Fields a route's path
names (``subject_id``, ``case_id``) come from the path, ``expected_version`` from ``If-Match``. A
``rating_id`` is the public id readers see (the handlers resolve it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal

from services.kernel.model import command

# -- policy and subjects ----------------------------------------------------------------------------


@command
class ChangePolicy:
    """Change some of a community's policy settings (a field left out, None, stays as it is)."""

    community_id: str
    period: str | None = None
    min_ratings: int | None = None
    prior_mean: Decimal | None = None
    prior_weight: int | None = None
    satisfaction_threshold_pct: int | None = None
    followup_working_days: int | None = None
    burst_window_minutes: int | None = None
    burst_min_ratings: int | None = None
    expected_version: int | None = None

    def changes(self) -> dict[str, object]:
        """The settings this command changes."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if field.name not in ("community_id", "expected_version") and getattr(self, field.name) is not None}


@command
class RegisterSubject:
    subject_id: str
    kind: str
    name: str
    community_id: str
    unit_id: str | None = None  # cadres and grid workers: their unit
    person_id: str | None = None  # cadres and grid workers: the person
    description: str = ""


# -- ratings ----------------------------------------------------------------------------------------

@command
class SubmitRating:
    """A resident rates a subject: a new rating of the period, or a revision of theirs."""

    subject_id: str
    level: int
    dimensions: Mapping[str, int] = dataclasses.field(default_factory=dict)
    comment: str = ""


@command
class ReviseRating:
    rating_id: str
    level: int
    dimensions: Mapping[str, int] = dataclasses.field(default_factory=dict)
    comment: str = ""
    expected_version: int | None = None


@command
class FileAppeal:
    rating_id: str
    grounds: str  # mistaken | malicious
    statement: str


@command
class DecideAppeal:
    rating_id: str
    upheld: bool
    reason: str


@command
class ReviewFlag:
    """Keep the ratings of a burst incident (a flag), or exclude them: once, after it has ended."""

    subject_id: str
    flag_id: str
    decision: str  # keep | exclude
    reason: str


@command
class RecordProjectEvaluation:
    """共评: a resident's evaluation of a project (``ProjectRated`` on projects.events), a rating of
    the project and of its responsible unit."""

    event_id: str
    rated_at: datetime
    project_id: str
    project_title: str
    community_id: str
    responsible_unit: Mapping[str, str]  # unit_id, name
    person_id: str
    score: int
    comment: str = ""


# -- follow-up cases --------------------------------------------------------------------------------

@command
class ContactResident:
    """回访: record contact with the resident."""

    case_id: str
    channel: str  # phone | visit | message
    note: str
    expected_version: int | None = None


@command
class RecordRectification:
    case_id: str
    actions: str
    expected_version: int | None = None


@command
class ConfirmOutcome:
    """Close the case with the resident's confirmation (or what the resident said to a handler)."""

    case_id: str
    satisfied: bool
    comment: str = ""
    expected_version: int | None = None


@command
class SweepOverdue:
    """Record every open case past its deadline as overdue (a periodic job)."""


@command
class CloseCasesOfExcludedRatings:
    """Close the cases left open when their ratings were excluded before an exclusion closed its
    case (the same periodic job, before :class:`SweepOverdue`)."""


# -- rankings and support plans ---------------------------------------------------------------------

@command
class PublishRanking:
    community_id: str
    kind: str
    period: str
    provisional: bool = False


@command
class DrawUpPlan:
    plan_id: str
    mentor: Mapping[str, str]  # person_id, name
    actions: tuple[str, ...]
    deadline: date


@command
class NoteProgress:
    plan_id: str
    note: str
