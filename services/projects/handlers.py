"""The projects service layer: one function per command, each one unit of work.

A handler loads the aggregates it needs inside a serialised write transaction, lets them decide,
and appends what they decided — a project and its community's fund together when a command moves
money (open vote, close vote, spending, completion, reward). A refused command raises before
anything is appended, so it changes nothing. ``expected_version`` comes from ``If-Match``.
Every handler returns the aggregate after the command and the events it recorded.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from services.kernel.aggregate import unit_of_work
from services.kernel.auth import Principal
from services.kernel.events import Metadata, format_time
from services.kernel.eventstore import EventStore
from services.projects.community import Community, CommunityFund
from services.projects.domain import Project, require_member


Outcome = tuple  # (the aggregate after the command, the events it recorded in every stream)


def new_id() -> str:
    return uuid.uuid4().hex[:16]


class ProjectsService:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    # -- communities and the fund -----------------------------------------------------------

    def register_community(self, actor: Principal, meta: Metadata, body: dict[str, Any]) -> Outcome:
        actor.require("admin")
        with unit_of_work(self.store, meta) as uow:
            community = uow.load(Community, body["community_id"])
            uow.record(community, community.register(body["name"], body.get("district", ""),
                                                     body.get("grids", []), body.get("settings")))
        return community, uow.recorded

    def _community_command(self, actor, meta, community_id, expected_version, decide) -> Outcome:
        with unit_of_work(self.store, meta) as uow:
            community = uow.get(Community, community_id, expected_version=expected_version)
            require_member(actor, community_id, ("cadre", "admin"))
            uow.record(community, decide(community))
        return community, uow.recorded

    def add_grid(self, actor, meta, community_id, body, expected_version=None) -> Outcome:
        return self._community_command(actor, meta, community_id, expected_version,
                                       lambda c: c.add_grid(body["grid_id"], body["name"]))

    def set_representatives(self, actor, meta, community_id, body, expected_version=None) -> Outcome:
        return self._community_command(actor, meta, community_id, expected_version,
                                       lambda c: c.set_representatives(body["representatives"]))

    def change_settings(self, actor, meta, community_id, body, expected_version=None) -> Outcome:
        return self._community_command(actor, meta, community_id, expected_version,
                                       lambda c: c.change_settings(body))

    def credit_fund(self, actor, meta, community_id, body) -> Outcome:
        with unit_of_work(self.store, meta) as uow:
            uow.get(Community, community_id)
            require_member(actor, community_id, ("cadre", "admin"))
            fund = uow.load(CommunityFund, community_id)
            uow.record(fund, fund.credit(body["amount_fen"], body["source"], body.get("reference", ""),
                                         body.get("note", "")))
        return fund, uow.recorded

    # -- projects ---------------------------------------------------------------------------

    def propose(self, actor: Principal, meta: Metadata, body: dict[str, Any]) -> Outcome:
        with unit_of_work(self.store, meta) as uow:
            community = uow.load(Community, body["community_id"])
            project = uow.load(Project, new_id())
            uow.record(project, project.propose(actor, body, community))
        return project, uow.recorded

    def act(self, project_id: str, expected_version: int | None, meta: Metadata, decide) -> Outcome:
        """A command that changes only the project: ``decide(project, uow) -> events``."""
        with unit_of_work(self.store, meta) as uow:
            project = uow.get(Project, project_id, expected_version=expected_version)
            uow.record(project, decide(project, uow))
        return project, uow.recorded

    def open_vote(self, actor, meta, project_id, body, expected_version=None) -> Outcome:
        with unit_of_work(self.store, meta) as uow:
            project = uow.get(Project, project_id, expected_version=expected_version)
            community = uow.load(Community, project.community_id)
            events = project.open_vote(actor, community, body.get("responsible_unit"))
            fund = uow.load(CommunityFund, project.community_id)
            uow.record(fund, fund.reserve(project.id, project.requested_fen))
            uow.record(project, events)
        return project, uow.recorded

    def close_vote(self, actor, meta, project_id, expected_version=None) -> Outcome:
        with unit_of_work(self.store, meta) as uow:
            project = uow.get(Project, project_id, expected_version=expected_version)
            uow.record(project, project.close_vote(actor))
            if project.stage == "rejected":
                fund = uow.load(CommunityFund, project.community_id)
                uow.record(fund, fund.release(project.id, f"project {project.id} rejected by the council"))
        return project, uow.recorded

    def record_spending(self, actor, meta, project_id, body, expected_version=None) -> Outcome:
        with unit_of_work(self.store, meta) as uow:
            project = uow.get(Project, project_id, expected_version=expected_version)
            spending_id = new_id()
            events = project.record_spending(actor, spending_id, body["amount_fen"], body["receipt_ref"],
                                             body.get("description", ""))
            fund = uow.load(CommunityFund, project.community_id)
            uow.record(fund, fund.spend(project.id, body["amount_fen"], body["receipt_ref"],
                                        body.get("description", "")))
            uow.record(project, events)
        return project, uow.recorded

    def complete(self, actor, meta, project_id, expected_version=None) -> Outcome:
        with unit_of_work(self.store, meta) as uow:
            project = uow.get(Project, project_id, expected_version=expected_version)
            uow.record(project, project.complete(actor))
            fund = uow.load(CommunityFund, project.community_id)
            uow.record(fund, fund.release(project.id, f"unspent remainder of completed project {project.id}"))
        return project, uow.recorded

    def pay_reward(self, actor, meta, project_id, body, expected_version=None) -> Outcome:
        with unit_of_work(self.store, meta) as uow:
            project = uow.get(Project, project_id, expected_version=expected_version)
            events = project.pay_reward(actor, body["recipient_id"], body["amount_fen"], body["reason"])
            fund = uow.load(CommunityFund, project.community_id)
            reward = events[0].data
            uow.record(fund, fund.pay_reward(project.id, reward["recipient_id"], reward["recipient_name"],
                                             reward["amount_fen"], reward["reason"]))
            uow.record(project, events)
        return project, uow.recorded

    def resolve_problem(self, actor, meta, project_id, problem_id, body, expected_version=None) -> Outcome:
        with unit_of_work(self.store, meta) as uow:
            project = uow.get(Project, project_id, expected_version=expected_version)
            uow.record(project, project.resolve_problem(actor, problem_id, body["resolution"], uow.now()))
        return project, uow.recorded

    def confirm_delivery(self, actor, meta, project_id, pledge_id, body, expected_version=None) -> Outcome:
        def decide(project, uow):
            delivered_at: datetime = body.get("delivered_at") or uow.now()
            return project.confirm_delivery(actor, pledge_id, body, format_time(delivered_at))
        return self.act(project_id, expected_version, meta, decide)

