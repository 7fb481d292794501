"""The feedback service's command handlers: one per command, ``(command, uow)``.

Each runs in one unit of work (:class:`services.kernel.bus.MessageBus` opens it, or joins the
consumer's transaction). A rating of 1 or 2 opens its follow-up case in the same unit of work; a
rating of 5 joins the subject's growing burst incident or checks, in the same unit, whether it
completes a new one; excluding a rating closes its open follow-up case in the same unit;
publishing a ranking opens and closes support plans with the ``RankingPublished`` event. Read
models are consistent inside the write transaction (projections are applied with the append), so
decisions may query them (named queries of :mod:`services.feedback.views`). A handler answers with
the changed resource's record (:mod:`services.feedback.views`), folded from its stream as the unit
of work left it: what readers will see of it.

The clock (``uow.now()``) and the ids (``uow.new_id()``) are the bus's, injected by bootstrap. The
handlers of ratings need the deployment's rating ids too: :func:`handlers_for` binds them, and
:func:`command_handlers` (the service definition's) with the deployment's secret.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from services.feedback import commands as c
from services.feedback import views
from services.feedback.domain import (
    FollowUpCase, Policy, Ranking, Rating, Subject, SupportPlan, clears_threshold, is_bad, last_ranked, period_of,
    previous_period, rank, ranking_key, support_triggers,
)
from services.feedback.ids import RatingIds, legacy_rating_id
from services.kernel.aggregate import UnitOfWork, reads_first
from services.kernel.bus import Handler
from services.kernel.errors import ConcurrencyError, NotFound
from services.kernel.model import Aggregate, fields_of

A = TypeVar("A", bound=Aggregate)


def _record(uow: UnitOfWork, record: type[A], state) -> A:
    """``state``'s record (what readers see of it) as this unit of work left it: the state itself
    when it was loaded as its record (from the read model's snapshot), else folded from its stream."""
    if isinstance(state, record):
        return state
    return record.replay(state.id, uow.events_of(state))


# -- policy and subjects ----------------------------------------------------------------------------

def change_policy(cmd: c.ChangePolicy, uow: UnitOfWork) -> Policy:
    policy = uow.load(Policy, cmd.community_id)  # a community without changes has the defaults
    if cmd.expected_version is not None and cmd.expected_version != policy.version:
        raise ConcurrencyError(policy.stream_id, cmd.expected_version, policy.version)
    uow.record(policy, policy.change(uow.actor, cmd.changes()))
    return policy


def register_subject(cmd: c.RegisterSubject, uow: UnitOfWork) -> views.SubjectRecord:
    subject = uow.load(Subject, cmd.subject_id)
    uow.record(subject, subject.register(uow.actor, fields_of(cmd)))
    return _record(uow, views.SubjectRecord, subject)


def review_flag(cmd: c.ReviewFlag, uow: UnitOfWork) -> views.SubjectRecord:
    """Review a burst incident once it has ended: keep its ratings, or exclude them (each by its
    own ``RatingExcluded``, closing a follow-up case a rating still had open)."""
    actor = uow.actor
    subject = uow.get(Subject, cmd.subject_id)
    uow.record(subject, subject.review_flag(actor, cmd.flag_id, cmd.decision, cmd.reason, uow.now()))
    if cmd.decision == "exclude":
        for rating_id in subject.incidents[cmd.flag_id]["rating_ids"]:
            rating = uow.load(Rating, rating_id)
            exclude(uow, rating, rating.exclude(f"burst of top ratings excluded on review: {cmd.reason}",
                                                actor.person_id, "burst_review"))
    return _record(uow, views.SubjectRecord, subject)


def exclude(uow: UnitOfWork, rating: Rating, events) -> None:
    """Record a rating's events that exclude it and, in the same unit of work, close the follow-up
    case it still has open: a rating that does not count leaves nothing to follow up."""
    uow.record(rating, events)
    if rating.excluded is not None and rating.case_id is not None:
        case = uow.load(FollowUpCase, rating.case_id)
        uow.record(case, case.close_for_exclusion(rating, uow.now()))


def subject_for(uow: UnitOfWork, subject_id: str, kind: str, name: str, community_id: str) -> Subject:
    """The subject, registered first (by no one: a project evaluation) when it is new."""
    subject = uow.load(Subject, subject_id)
    if not subject.exists:
        uow.record(subject, subject.register(None, {"kind": kind, "name": name, "community_id": community_id},
                                             via="project_evaluation"))
    return subject


# -- what a rating sets off -------------------------------------------------------------------------

def after_rating(uow: UnitOfWork, rating: Rating, subject: Subject, policy: dict[str, Any]) -> None:
    """差评 opens a follow-up case (unless one is open for this rating); a top rating may
    complete a burst to flag."""
    if rating.excluded is not None:
        return  # an excluded rating, revised: it counts for nothing and opens nothing
    if is_bad(rating.level) and not _open_case(uow, rating):
        case = uow.load(FollowUpCase, uow.new_id())
        uow.record(case, case.open(rating, subject, uow.now(), policy["followup_working_days"]))
        uow.record(rating, rating.link_case(case.id))
    if rating.level == 5:
        _check_burst(uow, subject, rating, policy)


def _open_case(uow: UnitOfWork, rating: Rating) -> bool:
    if rating.case_id is None:
        return False
    return uow.load(FollowUpCase, rating.case_id).status == "open"


def _check_burst(uow: UnitOfWork, subject: Subject, rating: Rating, policy: dict[str, Any]) -> None:
    """A top rating joins the subject's burst incident while it grows; otherwise it may complete a
    new one: ``burst_min_ratings`` top ratings not in an incident within ``burst_window_minutes``."""
    flagged = subject.flagged_ratings
    if rating.id in flagged:
        return  # a flagged rating revised: it is in its incident already
    now = uow.now()
    growing = subject.growing_incident(now)
    if growing is not None:
        uow.record(subject, subject.grow_incident(growing, [rating.id], now))
        return
    window = policy["burst_window_minutes"]
    since = now - timedelta(minutes=window)
    fresh = [r for r in views.top_ratings_since(uow.connection, subject.id, since) if r not in flagged]
    if len(fresh) >= policy["burst_min_ratings"]:
        uow.record(subject, subject.open_incident(uow.new_id(), fresh, since, now, window))


# -- ratings (with the deployment's rating ids) -----------------------------------------------------

class RatingHandlers:
    """The handlers that find ratings by their ids: a resident's rating of a subject in a period is
    stored under an id keyed by the deployment's secret, and callers name ratings by public ids."""

    def __init__(self, ids: RatingIds) -> None:
        self.ids = ids

    def _stored(self, public_id: str) -> str:
        stored = self.ids.resolve(public_id)
        if stored is None:
            raise NotFound(f"no rating {public_id}")
        return stored

    def _rating(self, uow: UnitOfWork, subject_id: str, period: str, person_id: str, source: str) -> Rating:
        """The resident's rating of the subject in the period from this source: new, or the one
        submitted before (also under the id it had before ids were keyed by the secret)."""
        rating = uow.load(Rating, self.ids.stored(subject_id, period, person_id, source))
        if not rating.exists:
            earlier = uow.load(Rating, legacy_rating_id(subject_id, period, person_id, source))
            if earlier.exists:
                return earlier
        return rating

    @reads_first
    def submit_rating(self, cmd: c.SubmitRating, uow: UnitOfWork) -> views.RatingRecord:
        """A resident rates a subject: the first time in a period it is a new rating, again in the
        same period it revises that rating. Run optimistically (:func:`reads_first`): the subject,
        the community's policy and the rating are loaded, and the rating decided, outside the
        writers' turn; the burst check and the follow-up case come after the first record, in it."""
        actor = uow.actor
        subject = uow.get(Subject, cmd.subject_id)
        subject.may_be_rated_by(actor)
        policy = uow.load(Policy, subject.community_id).settings  # a community without changes has the defaults
        period = period_of(uow.now(), policy["period"])
        rating = self._rating(uow, subject.id, period, actor.person_id, "resident")
        if rating.exists:
            uow.record(rating, rating.revise(actor, uow.now(), cmd.level, dict(cmd.dimensions), cmd.comment,
                                             uow.opened(rating.comment)))
        else:
            uow.record(rating, rating.submit(subject, actor.person_id, period, cmd.level, dict(cmd.dimensions),
                                             cmd.comment, {"kind": "resident"}, uow.now()))
        after_rating(uow, rating, subject, policy)
        return _record(uow, views.RatingRecord, rating)

    def revise_rating(self, cmd: c.ReviseRating, uow: UnitOfWork) -> views.RatingRecord:
        rating = uow.get(Rating, self._stored(cmd.rating_id), expected_version=cmd.expected_version)
        uow.record(rating, rating.revise(uow.actor, uow.now(), cmd.level, dict(cmd.dimensions), cmd.comment,
                                         uow.opened(rating.comment)))
        subject = uow.get(Subject, rating.subject_id)
        after_rating(uow, rating, subject, views.policy_for(uow.connection, subject.community_id)[0])
        return _record(uow, views.RatingRecord, rating)

    def file_appeal(self, cmd: c.FileAppeal, uow: UnitOfWork) -> views.RatingRecord:
        rating = uow.get(Rating, self._stored(cmd.rating_id))
        subject = uow.get(Subject, rating.subject_id)
        uow.record(rating, rating.file_appeal(uow.actor, subject, cmd.grounds, cmd.statement))
        return _record(uow, views.RatingRecord, rating)

    def decide_appeal(self, cmd: c.DecideAppeal, uow: UnitOfWork) -> views.RatingRecord:
        rating = uow.get(Rating, self._stored(cmd.rating_id))
        exclude(uow, rating, rating.decide_appeal(uow.actor, cmd.upheld, cmd.reason))
        return _record(uow, views.RatingRecord, rating)

    def record_project_evaluation(self, cmd: c.RecordProjectEvaluation, uow: UnitOfWork) -> None:
        """A project evaluation: a rating of the project and of its responsible unit, each exactly
        once (the consumer's inbox, and the rating's own stream being deterministic)."""
        unit = cmd.responsible_unit
        project_subject = subject_for(uow, f"project-{cmd.project_id}", "project", cmd.project_title,
                                      cmd.community_id)
        unit_subject = subject_for(uow, unit["unit_id"], "unit", unit["name"], cmd.community_id)
        source = {"kind": "project_evaluation", "project_id": cmd.project_id, "event_id": cmd.event_id}
        for subject in (project_subject, unit_subject):
            policy, _ = views.policy_for(uow.connection, subject.community_id)
            period = period_of(cmd.rated_at, policy["period"])
            rating = self._rating(uow, subject.id, period, cmd.person_id, f"project:{cmd.project_id}")
            if rating.exists:
                continue  # the same evaluation again
            uow.record(rating, rating.submit(subject, cmd.person_id, period, cmd.score, {}, cmd.comment, source,
                                             cmd.rated_at))
            after_rating(uow, rating, subject, policy)


# -- follow-up cases --------------------------------------------------------------------------------

def contact_resident(cmd: c.ContactResident, uow: UnitOfWork) -> views.CaseRecord:
    case = uow.get(FollowUpCase, cmd.case_id, expected_version=cmd.expected_version)
    uow.record(case, case.contact(uow.actor, cmd.channel, cmd.note))
    return _record(uow, views.CaseRecord, case)


def record_rectification(cmd: c.RecordRectification, uow: UnitOfWork) -> views.CaseRecord:
    case = uow.get(FollowUpCase, cmd.case_id, expected_version=cmd.expected_version)
    uow.record(case, case.rectify(uow.actor, cmd.actions))
    return _record(uow, views.CaseRecord, case)


def confirm_outcome(cmd: c.ConfirmOutcome, uow: UnitOfWork) -> views.CaseRecord:
    case = uow.get(FollowUpCase, cmd.case_id, expected_version=cmd.expected_version)
    uow.record(case, case.confirm(uow.actor, cmd.satisfied, cmd.comment, uow.now()))
    return _record(uow, views.CaseRecord, case)


def sweep_overdue(cmd: c.SweepOverdue, uow: UnitOfWork) -> int:
    """Record ``FollowUpOverdue`` for every open case past its deadline; how many."""
    now = uow.now()
    recorded = 0
    for case_id in views.cases_past_deadline(uow.connection, now):
        case = uow.load(FollowUpCase, case_id)
        recorded += len(uow.record(case, case.overdue_events(now)))
    return recorded


def close_cases_of_excluded_ratings(cmd: c.CloseCasesOfExcludedRatings, uow: UnitOfWork) -> int:
    """Close, with the exclusion's reason, every open case whose rating is excluded: those stored
    before excluding a rating closed its case in the same unit of work; how many."""
    closed = 0
    for case_id, rating_id in views.open_cases_of_excluded_ratings(uow.connection):
        case = uow.load(FollowUpCase, case_id)
        closed += len(uow.record(case, case.close_for_exclusion(uow.load(Rating, rating_id), uow.now())))
    return closed


# -- rankings and support plans ---------------------------------------------------------------------

def publish_ranking(cmd: c.PublishRanking, uow: UnitOfWork) -> views.RankingRecord:
    ranking = uow.load(Ranking, ranking_key(cmd.community_id, cmd.kind, cmd.period))
    policy, policy_version = views.policy_for(uow.connection, cmd.community_id)
    table = rank(views.STATS.for_ranking(uow.connection, cmd.community_id, cmd.kind, cmd.period), policy)
    last_position = uow.store.last_position(connection=uow.connection)
    uow.record(ranking, ranking.publish(uow.actor, cmd.community_id, cmd.kind, cmd.period, uow.now(), table,
                                        last_position, policy_version, cmd.provisional))
    if not cmd.provisional:
        _support_plans(uow, cmd, table, policy)
    return _record(uow, views.RankingRecord, ranking)


def _support_plans(uow: UnitOfWork, cmd: c.PublishRanking, table: dict[str, Any], policy: dict[str, Any]) -> None:
    """Open a plan for each ranked subject that needs one and has none; close the open plan of a
    subject that clears the threshold in a later period than the plan's."""
    last = last_ranked(table["ranked"])
    previous = uow.load(Ranking, ranking_key(cmd.community_id, cmd.kind, previous_period(cmd.period))).latest_final
    previous_last = None
    if previous:  # an edition folded before editions kept ``last_ranked`` has its table instead
        previous_last = previous["last_ranked"] if "last_ranked" in previous else last_ranked(previous["ranked"])
    for entry in table["ranked"]:
        open_plan = views.open_plan_of(uow.connection, entry["subject_id"])
        triggers = support_triggers(entry, policy, last, previous_last, cmd.period)
        if triggers and open_plan is None:
            plan = uow.load(SupportPlan, uow.new_id())
            subject = uow.load(Subject, entry["subject_id"])
            uow.record(plan, plan.open(entry, subject.person_id if subject.exists else None, cmd.community_id,
                                       cmd.kind, cmd.period, triggers))
        elif not triggers and open_plan is not None and clears_threshold(entry, policy):
            plan = uow.load(SupportPlan, open_plan)
            if plan.opened_for < cmd.period:
                uow.record(plan, plan.close(cmd.period, entry["satisfaction_rate"]))


def draw_up_plan(cmd: c.DrawUpPlan, uow: UnitOfWork) -> views.PlanRecord:
    plan = uow.get(SupportPlan, cmd.plan_id)
    uow.record(plan, plan.draw_up(uow.actor, dict(cmd.mentor), list(cmd.actions), cmd.deadline))
    return _record(uow, views.PlanRecord, plan)


def note_progress(cmd: c.NoteProgress, uow: UnitOfWork) -> views.PlanRecord:
    plan = uow.get(SupportPlan, cmd.plan_id)
    uow.record(plan, plan.note(uow.actor, cmd.note))
    return _record(uow, views.PlanRecord, plan)


# -- the mapping --------------------------------------------------------------------------------------

def handlers_for(ids: RatingIds) -> dict[type, Handler]:
    """Every command's one handler, those of ratings bound to ``ids``."""
    ratings = RatingHandlers(ids)
    return {
        c.ChangePolicy: change_policy,
        c.RegisterSubject: register_subject,
        c.SubmitRating: ratings.submit_rating,
        c.ReviseRating: ratings.revise_rating,
        c.FileAppeal: ratings.file_appeal,
        c.DecideAppeal: ratings.decide_appeal,
        c.ReviewFlag: review_flag,
        c.RecordProjectEvaluation: ratings.record_project_evaluation,
        c.ContactResident: contact_resident,
        c.RecordRectification: record_rectification,
        c.ConfirmOutcome: confirm_outcome,
        c.SweepOverdue: sweep_overdue,
        c.CloseCasesOfExcludedRatings: close_cases_of_excluded_ratings,
        c.PublishRanking: publish_ranking,
        c.DrawUpPlan: draw_up_plan,
        c.NoteProgress: note_progress,
    }


def command_handlers(resources) -> dict[type, Handler]:
    """The handlers of a process: bound to its rating ids (:func:`services.feedback.ids.resources`)."""
    return handlers_for(resources["rating_ids"])
