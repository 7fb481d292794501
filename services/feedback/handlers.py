"""The feedback service layer: each command is one unit of work over one or more streams.

A rating of 1 or 2 opens its follow-up case in the same transaction; a rating of 5 checks, in the
same transaction, whether it completes a burst of top ratings to flag; publishing a ranking opens
and closes support plans in the same transaction as the ``RankingPublished`` event. Read models
are consistent inside the write transaction (projections are applied with the append), so
decisions may query them.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from services.feedback.domain import (
    FollowUpCase, Policy, Ranking, Rating, Subject, SupportPlan, clears_threshold, is_bad, period_of,
    RatingIds, legacy_rating_id, previous_period, rank, ranking_digest, ranking_key, support_triggers,
)
from services.feedback.views import CASES, PLANS, RANKINGS, RATINGS, STATS, SUBJECTS, fold_stats, policy_for
from services.kernel.aggregate import unit_of_work
from services.kernel.auth import Principal
from services.kernel.errors import ConcurrencyError
from services.kernel.events import Metadata, NewEvent, StoredEvent, format_time, to_micros, utc_now
from services.kernel.eventstore import EventStore
from services.kernel.secrets import deployment_secret


def now() -> datetime:
    """The service's clock (tests replace it to move through periods and deadlines)."""
    return utc_now()


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def feedback_service(container) -> "FeedbackService":
    """The service layer of a process, with the deployment's rating-id secret (the setting, or the
    one generated at first start and kept in the database)."""
    secret = deployment_secret(container.store.engine, "rating-id secret", container.settings.rating_id_secret,
                               "FEEDBACK_RATING_ID_SECRET")
    return FeedbackService(container.store, RatingIds(secret))


class FeedbackService:
    def __init__(self, store: EventStore, ids: RatingIds) -> None:
        self.store = store
        self.ids = ids

    def _rating(self, uow, subject_id: str, period: str, person_id: str, source: str) -> Rating:
        """The resident's rating of the subject in the period from this source: new, or the one
        submitted before (also under the id it had before ids were keyed by the secret)."""
        rating = uow.load(Rating, self.ids.stored(subject_id, period, person_id, source))
        if not rating.exists:
            earlier = uow.load(Rating, legacy_rating_id(subject_id, period, person_id, source))
            if earlier.exists:
                return earlier
        return rating

    def _uow(self, meta: Metadata | None, connection=None):
        return unit_of_work(self.store, meta, connection=connection, clock=lambda: now())

    # -- policy and subjects ------------------------------------------------------------------

    def change_policy(self, actor: Principal, meta, community_id: str, changes: dict[str, Any],
                      expected_version=None):
        with self._uow(meta) as uow:
            policy = uow.load(Policy, community_id)
            if expected_version is not None and expected_version != policy.version:
                raise ConcurrencyError(policy.stream_id, expected_version, policy.version)
            uow.record(policy, policy.change(actor, changes))
        return policy, uow.recorded

    def register_subject(self, actor: Principal, meta, body: dict[str, Any]):
        with self._uow(meta) as uow:
            subject = uow.load(Subject, body["subject_id"])
            uow.record(subject, subject.register(actor, body))
        return subject, uow.recorded

    # -- ratings ------------------------------------------------------------------------------

    def rate(self, actor: Principal, meta, subject_id: str, body: dict[str, Any]):
        """A resident rates a subject: the first time in a period it is a new rating (201), again
        in the same period it revises that rating (200)."""
        with self._uow(meta) as uow:
            subject = uow.get(Subject, subject_id)
            subject.may_be_rated_by(actor)
            policy, _ = policy_for(uow.connection, subject.community_id)
            period = period_of(uow.now(), policy["period"])
            rating = self._rating(uow, subject.id, period, actor.person_id, "resident")
            created = not rating.exists
            dimensions, comment = body.get("dimensions", {}), body.get("comment", "")
            if created:
                uow.record(rating, rating.submit(subject, actor.person_id, period, body["level"], dimensions,
                                                 comment, {"kind": "resident"}, uow.now()))
            else:
                uow.record(rating, rating.revise(actor, uow.now(), body["level"], dimensions, comment))
            self._after_rating(uow, rating, subject, policy)
        return rating, uow.recorded, created

    def revise(self, actor: Principal, meta, rating_id: str, body: dict[str, Any], expected_version=None):
        with self._uow(meta) as uow:
            rating = uow.get(Rating, rating_id, expected_version=expected_version)
            uow.record(rating, rating.revise(actor, uow.now(), body["level"], body.get("dimensions", {}),
                                             body.get("comment", "")))
            subject = uow.get(Subject, rating.subject_id)
            self._after_rating(uow, rating, subject, policy_for(uow.connection, subject.community_id)[0])
        return rating, uow.recorded

    def _after_rating(self, uow, rating: Rating, subject: Subject, policy: dict[str, Any]) -> None:
        """差评 opens a follow-up case (unless one is open for this rating); a top rating may
        complete a burst to flag."""
        if is_bad(rating.level) and not self._open_case(uow, rating):
            case = uow.load(FollowUpCase, new_id())
            uow.record(case, case.open(rating, uow.now(), policy["followup_working_days"]))
            uow.record(rating, [_linked(rating, case.id)])
        if rating.level == 5:
            self._check_burst(uow, subject, policy)

    @staticmethod
    def _open_case(uow, rating: Rating) -> bool:
        if rating.case_id is None:
            return False
        case = uow.load(FollowUpCase, rating.case_id)
        return case.status == "open"

    def _check_burst(self, uow, subject: Subject, policy: dict[str, Any]) -> None:
        window = timedelta(minutes=policy["burst_window_minutes"])
        since = uow.now() - window
        t = RATINGS.table
        rows = uow.connection.execute(
            sa.select(t.c.id).where(t.c.subject_id == subject.id, t.c.level == 5,
                                    t.c.rated_at_us >= to_micros(since), t.c.excluded.is_(False))
            .order_by(t.c.rated_at_us, t.c.id)).all()
        fresh = [r.id for r in rows if r.id not in subject.flagged_ratings]
        already = len(rows) - len(fresh)
        # A new burst needs the threshold of fresh ratings; an ongoing one (some in the window are
        # flagged already) flags each further top rating as it comes.
        if fresh and (len(fresh) >= policy["burst_min_ratings"] or already >= policy["burst_min_ratings"]):
            uow.record(subject, subject.flag_burst(new_id(), fresh, format_time(since), format_time(uow.now())))

    # -- appeals and flags --------------------------------------------------------------------

    def appeal(self, actor, meta, rating_id, body):
        with self._uow(meta) as uow:
            rating = uow.get(Rating, rating_id)
            subject = uow.get(Subject, rating.subject_id)
            uow.record(rating, rating.file_appeal(actor, subject, body["grounds"], body["statement"]))
        return rating, uow.recorded

    def decide_appeal(self, actor, meta, rating_id, body):
        with self._uow(meta) as uow:
            rating = uow.get(Rating, rating_id)
            uow.record(rating, rating.decide_appeal(actor, body["upheld"], body["reason"]))
        return rating, uow.recorded

    def review_flag(self, actor, meta, subject_id, flag_id, body):
        """Keep the flagged ratings, or exclude them (each by its own ``RatingExcluded``)."""
        with self._uow(meta) as uow:
            subject = uow.get(Subject, subject_id)
            uow.record(subject, subject.review_flag(actor, flag_id, body["decision"], body["reason"]))
            if body["decision"] == "exclude":
                for rating_id in subject.flags[flag_id]["rating_ids"]:
                    rating = uow.load(Rating, rating_id)
                    uow.record(rating, rating.exclude(f"burst of top ratings excluded on review: {body['reason']}",
                                                      actor.person_id, "burst_review"))
        return subject, uow.recorded

    # -- follow-up cases ----------------------------------------------------------------------

    def on_case(self, actor, meta, case_id, decide, expected_version=None):
        with self._uow(meta) as uow:
            case = uow.get(FollowUpCase, case_id, expected_version=expected_version)
            uow.record(case, case.overdue_events(uow.now()))
            uow.record(case, decide(case))
        return case, uow.recorded

    def sweep_overdue(self, meta: Metadata | None = None, community_id: str | None = None) -> int:
        """Record ``FollowUpOverdue`` for every open case past its deadline; returns how many."""
        t = CASES.table
        where = [t.c.status == "open", t.c.overdue.is_(False), t.c.deadline_us <= to_micros(now())]
        if community_id:
            where.append(t.c.community_id == community_id)
        with self.store.engine.connect() as connection:
            due = [r.id for r in connection.execute(sa.select(t.c.id).where(*where))]
        if not due:
            return 0
        with self._uow(meta or Metadata(actor="system:overdue-sweep")) as uow:
            for case_id in due:
                case = uow.load(FollowUpCase, case_id)
                uow.record(case, case.overdue_events(uow.now()))
        return sum(1 for e in uow.recorded if e.event_type == "FollowUpOverdue")

    # -- rankings and support plans -----------------------------------------------------------

    def live_ranking(self, connection, community_id: str, kind: str, period: str) -> dict[str, Any]:
        policy, _ = policy_for(connection, community_id)
        return rank(STATS.for_ranking(connection, community_id, kind, period), policy)

    def publish_ranking(self, actor, meta, community_id: str, kind: str, period: str, provisional: bool = False):
        with self._uow(meta) as uow:
            ranking = uow.load(Ranking, ranking_key(community_id, kind, period))
            connection = uow.connection
            policy, policy_version = policy_for(connection, community_id)
            table = rank(STATS.for_ranking(connection, community_id, kind, period), policy)
            last_position = self.store.last_position(connection=connection)
            uow.record(ranking, ranking.publish(actor, community_id, kind, period, uow.now(), table,
                                                last_position, policy_version, provisional))
            if not provisional:
                self._support_plans(uow, community_id, kind, period, table, policy)
        return ranking, uow.recorded

    def _support_plans(self, uow, community_id, kind, period, table, policy) -> None:
        ranked = table["ranked"]
        last = ranked[-1]["subject_id"] if len(ranked) > 1 else None
        previous = RANKINGS.get(uow.connection, ranking_key(community_id, kind, previous_period(period)))
        previous_ranked = previous.latest_final["ranked"] if previous and previous.latest_final else []
        previous_last = previous_ranked[-1]["subject_id"] if len(previous_ranked) > 1 else None
        t = PLANS.table
        for entry in ranked:
            open_plan = uow.connection.execute(sa.select(t.c.id).where(
                t.c.subject_id == entry["subject_id"], t.c.status == "open")).first()
            triggers = support_triggers(entry, policy, last, previous_last, period)
            if triggers and open_plan is None:
                plan = uow.load(SupportPlan, new_id())
                subject = SUBJECTS.get(uow.connection, entry["subject_id"])
                uow.record(plan, plan.open(entry, subject.person_id if subject else None, community_id, kind,
                                           period, triggers))
            elif not triggers and open_plan is not None and clears_threshold(entry, policy):
                plan = uow.load(SupportPlan, open_plan.id)
                if plan.opened_for < period:
                    uow.record(plan, plan.close(period, entry["satisfaction_rate"]))

    def verify_ranking(self, ranking: Ranking, edition: int | None = None) -> dict[str, Any]:
        """Recompute a published edition from the log up to its last position."""
        published = ranking.editions[(edition or len(ranking.editions)) - 1]
        with self.store.engine.connect() as connection:
            names = {r.id: Subject.from_json(r.state).name
                     for r in connection.execute(sa.select(SUBJECTS.table.c.id, SUBJECTS.table.c.state).where(
                         SUBJECTS.table.c.community_id == ranking.community_id))}
        events = self.store.iterate_all(up_to_position=published["last_position"])
        stats = fold_stats(events, ranking.community_id, ranking.kind, ranking.period, names)
        policy = {"prior_mean": published["formula"]["prior_mean"],
                  "prior_weight": published["formula"]["prior_weight"],
                  "min_ratings": published["formula"]["min_ratings"]}
        table = rank(stats, policy)
        digest = ranking_digest(table)
        return {"ranking": ranking_key(ranking.community_id, ranking.kind, ranking.period),
                "edition": published["edition"], "last_position": published["last_position"],
                "published_digest": published["digest"], "recomputed_digest": digest,
                "identical": digest == published["digest"] and table["ranked"] == published["ranked"],
                "recomputed": table}

    def on_plan(self, actor, meta, plan_id, decide):
        with self._uow(meta) as uow:
            plan = uow.get(SupportPlan, plan_id)
            uow.record(plan, decide(plan))
        return plan, uow.recorded

    # -- project evaluations (consumer) -------------------------------------------------------

    def record_project_evaluation(self, connection, event: StoredEvent) -> None:
        """``ProjectRated`` on projects.events -> a rating of the project and of its responsible
        unit, each exactly once (the inbox, and the rating's own stream being deterministic)."""
        d = event.data
        # No actor: the rater is in the ratings' data (shown as the policy says), never in the
        # metadata of what the evaluation causes (a subject registered by a first evaluation is
        # public, and its actor would name the rater).
        caused = Metadata.caused_by(event)
        meta = Metadata(actor=None, correlation_id=caused.correlation_id, causation_id=caused.causation_id)
        with self._uow(meta, connection=connection) as uow:
            unit = d["responsible_unit"]
            project_subject = self._subject_for(uow, f"project-{d['project_id']}", "project",
                                                d.get("project_title") or d["project_id"], d["community_id"])
            unit_subject = self._subject_for(uow, unit["unit_id"], "unit", unit["name"], d["community_id"])
            source = {"kind": "project_evaluation", "project_id": d["project_id"], "event_id": event.event_id}
            for subject in (project_subject, unit_subject):
                policy, _ = policy_for(uow.connection, subject.community_id)
                period = period_of(event.occurred_at, policy["period"])
                rating = self._rating(uow, subject.id, period, d["person_id"], f"project:{d['project_id']}")
                if rating.exists:
                    continue  # the same evaluation again
                uow.record(rating, rating.submit(subject, d["person_id"], period, d["score"], {},
                                                 d.get("comment", ""), source, event.occurred_at))
                self._after_rating(uow, rating, subject, policy)

    @staticmethod
    def _subject_for(uow, subject_id: str, kind: str, name: str, community_id: str) -> Subject:
        subject = uow.load(Subject, subject_id)
        if not subject.exists:
            uow.record(subject, subject.register(None, {"kind": kind, "name": name, "community_id": community_id},
                                                 via="project_evaluation"))
        return subject


def _linked(rating: Rating, case_id: str) -> NewEvent:
    return NewEvent("FollowUpLinked", {"rating_id": rating.id, "case_id": case_id})
