"""Communities (社区) with grids and representatives, and the community fund (社区基金) ledger.

Pure domain: state evolves only by events, decisions raise domain errors, no I/O.

Fund arithmetic, all in integer fen: ``balance`` is what can still be reserved or paid out.
Credits raise it; a reservation for a project under vote lowers it; a release (rejected vote,
unspent remainder at completion) raises it again; spending is paid out of a reservation and does
not touch the balance; reward payments (以奖代补) lower it. The balance can never go negative.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from services.kernel.model import Aggregate, Conflict, DomainError, NewEvent

DEFAULT_SETTINGS: dict[str, int] = {
    # 6 co-signers: seven residents together with the proposer.
    "cosigners_required": 6,
    # Quorum: at least two thirds of the electorate cast a ballot (abstentions included).
    "quorum_numerator": 2,
    "quorum_denominator": 3,
    # Pass: strictly more than half of the ballots cast are "yes".
    "pass_numerator": 1,
    "pass_denominator": 2,
}
# An optional setting (absent: 0). Participatory budgeting rounds: 1 sends a round's winners to a
# council vote that confirms them (their money stays reserved meanwhile); 0 funds them at once.
ROUND_CONFIRMATION = "round_winners_to_council"

# Why a reservation returns to the fund: the FundReservationReleased event's ``reason`` (in
# English, from these templates) and its label in Chinese (the ledger's ``detail_label``).
RELEASE_REASONS: dict[str, tuple[str, str]] = {
    "rejected": ("项目 {project_id} 未获居民代表表决通过，预留资金退回", "project {project_id} rejected by the council"),
    "remainder": ("项目 {project_id} 已完工，未用完的预留资金退回", "unspent remainder of completed project {project_id}"),
    "round_rest": ("参与式预算轮次 {round_id} 结束，未分配的预算退回", "unallocated budget of round {round_id}"),
}
# Why money is reserved (the FundReserved event's ledger detail), and moved from a round to a project.
RESERVATION_REASONS: dict[str, tuple[str, str]] = {
    "vote": ("为居民代表表决预留", "reserved for the council vote"),
    "round": ("为参与式预算轮次 {round_id} 预留", "reserved for budgeting round {round_id}"),
    "transfer": ("参与式预算轮次 {round_id} 选中，预留资金转给项目", "won budgeting round {round_id}"),
}

FUND_SOURCES = {
    "government_allocation": "政府拨款 government allocation",
    "reward_pool": "以奖代补奖励资金 reward pool",
    "donation": "捐赠 donation",
}


@dataclasses.dataclass
class Community(Aggregate):
    stream_prefix: ClassVar[str] = "community"
    label: ClassVar[str] = "community"

    name: str = ""
    district: str = ""
    grids: dict[str, str] = dataclasses.field(default_factory=dict)
    representatives: dict[str, str] = dataclasses.field(default_factory=dict)
    settings: dict[str, int] = dataclasses.field(default_factory=lambda: dict(DEFAULT_SETTINGS))

    # -- decisions ------------------------------------------------------------------------

    def register(self, name: str, district: str, grids: list[dict[str, str]],
                 settings: dict[str, int] | None) -> list[NewEvent]:
        if self.exists:
            raise Conflict(f"community {self.id} is already registered", reason="already_registered")
        grid_ids = [g["grid_id"] for g in grids]
        if len(set(grid_ids)) != len(grid_ids):
            raise DomainError("grid ids must be unique", reason="duplicate_grid",
                              details={"grids": "duplicate grid_id"})
        merged = {**DEFAULT_SETTINGS, **(settings or {})}
        validate_settings(merged)
        return [NewEvent("CommunityRegistered", {
            "community_id": self.id, "name": name, "district": district,
            "grids": [{"grid_id": g["grid_id"], "name": g["name"]} for g in grids], "settings": merged,
        })]

    def add_grid(self, grid_id: str, name: str) -> list[NewEvent]:
        if grid_id in self.grids:
            raise Conflict(f"grid {grid_id} already exists in community {self.id}", reason="duplicate_grid")
        return [NewEvent("GridAdded", {"community_id": self.id, "grid_id": grid_id, "name": name})]

    def set_representatives(self, representatives: list[dict[str, str]]) -> list[NewEvent]:
        wanted = {r["person_id"]: r["name"] for r in representatives}
        if len(wanted) != len(representatives):
            raise DomainError("each representative may be listed once", reason="duplicate_representative",
                              details={"representatives": "duplicate person_id"})
        added = [{"person_id": p, "name": n} for p, n in wanted.items()
                 if self.representatives.get(p) != n]
        removed = sorted(p for p in self.representatives if p not in wanted)
        if not added and not removed:
            return []
        return [NewEvent("RepresentativesChanged", {
            "community_id": self.id, "added": added, "removed": removed, "count": len(wanted)})]

    def change_settings(self, changes: dict[str, int]) -> list[NewEvent]:
        merged = {**self.settings, **changes}
        validate_settings(merged)
        if merged == self.settings:
            return []
        return [NewEvent("CommunitySettingsChanged", {"community_id": self.id, "settings": merged})]

    # -- evolution ------------------------------------------------------------------------

    def on_CommunityRegistered(self, data: dict[str, Any], _event) -> None:
        self.name = data["name"]
        self.district = data.get("district", "")
        self.grids = {g["grid_id"]: g["name"] for g in data["grids"]}
        self.settings = dict(data["settings"])

    def on_GridAdded(self, data, _event) -> None:
        self.grids[data["grid_id"]] = data["name"]

    def on_RepresentativesChanged(self, data, _event) -> None:
        for person_id in data["removed"]:
            self.representatives.pop(person_id, None)
        for rep in data["added"]:
            self.representatives[rep["person_id"]] = rep["name"]

    def on_CommunitySettingsChanged(self, data, _event) -> None:
        self.settings = dict(data["settings"])

    def view(self) -> dict[str, Any]:
        return {
            "community_id": self.id, "name": self.name, "district": self.district,
            "grids": [{"grid_id": k, "name": v} for k, v in self.grids.items()],
            "representatives": [{"person_id": k, "name": v} for k, v in sorted(self.representatives.items())],
            "representative_count": len(self.representatives),
            "settings": self.settings, "version": self.version,
            "created_at": self.created_at, "updated_at": self.updated_at,
        }


def validate_settings(settings: dict[str, int]) -> None:
    errors = {}
    if not 0 <= settings["cosigners_required"] <= 1000:
        errors["cosigners_required"] = "must be between 0 and 1000"
    for prefix in ("quorum", "pass"):
        num, den = settings[f"{prefix}_numerator"], settings[f"{prefix}_denominator"]
        if den < 1 or not 0 <= num <= den:
            errors[f"{prefix}_numerator"] = f"{prefix} must be a fraction between 0 and 1"
    if settings.get("round_winners_to_council", 0) not in (0, 1):
        errors["round_winners_to_council"] = "must be 0 or 1"
    if errors:
        raise DomainError("the community settings are not valid", reason="invalid_settings", details=errors)


@dataclasses.dataclass
class CommunityFund(Aggregate):
    """The participatory budget of one community; the stream id is ``fund-<community_id>``."""

    stream_prefix: ClassVar[str] = "fund"
    label: ClassVar[str] = "community fund"

    balance_fen: int = 0
    credited_fen: int = 0
    reserved_fen: int = 0
    spent_fen: int = 0
    released_fen: int = 0
    rewards_fen: int = 0
    # project_id -> {"reserved": fen, "spent": fen, "released": fen}
    reservations: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    def outstanding(self, project_id: str) -> int:
        r = self.reservations.get(project_id)
        return 0 if r is None else r["reserved"] - r["spent"] - r["released"]

    # -- decisions ------------------------------------------------------------------------

    def credit(self, amount_fen: int, source: str, reference: str, note: str) -> list[NewEvent]:
        if source not in FUND_SOURCES:
            raise DomainError(f"unknown fund source {source!r}", reason="invalid_source",
                              details={"source": f"one of {', '.join(FUND_SOURCES)}"})
        _positive(amount_fen)
        return [NewEvent("FundCredited", {
            "community_id": self.id, "amount_fen": amount_fen, "source": source, "reference": reference,
            "note": note, "balance_after_fen": self.balance_fen + amount_fen})]

    def reserve(self, project_id: str, amount_fen: int) -> list[NewEvent]:
        if amount_fen <= 0:
            return []
        self._require_balance(amount_fen, "the project requests", "requested_fen")
        return [NewEvent("FundReserved", {
            "community_id": self.id, "project_id": project_id, "amount_fen": amount_fen,
            "balance_after_fen": self.balance_fen - amount_fen})]

    def reserve_for_round(self, round_id: str, amount_fen: int) -> list[NewEvent]:
        """A budgeting round's whole budget, held under the key ``round:<id>`` until it closes."""
        _positive(amount_fen)
        self._require_balance(amount_fen, "the round's budget is", "budget_fen")
        return [NewEvent("FundReserved", {
            "community_id": self.id, "round_id": round_id, "amount_fen": amount_fen,
            "balance_after_fen": self.balance_fen - amount_fen})]

    def transfer_from_round(self, round_id: str, project_id: str, amount_fen: int) -> list[NewEvent]:
        """A winner's amount moves from the round's reservation to the project's: the available
        balance does not move, and nothing is reserved twice."""
        left = self.outstanding(round_key(round_id))
        if not 0 < amount_fen <= left:
            raise Conflict(f"round {round_id} holds {left} fen, not {amount_fen}", reason="reservation_exceeded",
                           details={"reservation_remaining_fen": left, "amount_fen": amount_fen})
        return [NewEvent("FundReservationTransferred", {
            "community_id": self.id, "round_id": round_id, "project_id": project_id, "amount_fen": amount_fen,
            "balance_after_fen": self.balance_fen})]

    def release_round(self, round_id: str) -> list[NewEvent]:
        amount = self.outstanding(round_key(round_id))
        if amount <= 0:
            return []
        return [NewEvent("FundReservationReleased", {
            "community_id": self.id, "round_id": round_id, "amount_fen": amount,
            "reason": RELEASE_REASONS["round_rest"][1].format(round_id=round_id),
            "balance_after_fen": self.balance_fen + amount})]

    def release(self, project_id: str, reason: str) -> list[NewEvent]:
        amount = self.outstanding(project_id)
        if amount <= 0:
            return []
        return [NewEvent("FundReservationReleased", {
            "community_id": self.id, "project_id": project_id, "amount_fen": amount, "reason": reason,
            "balance_after_fen": self.balance_fen + amount})]

    def spend(self, project_id: str, amount_fen: int, receipt_ref: str, description: str) -> list[NewEvent]:
        _positive(amount_fen)
        remaining = self.outstanding(project_id)
        if amount_fen > remaining:
            raise Conflict(
                f"spending of {amount_fen} fen exceeds what remains of the project's reservation "
                f"({remaining} fen)", reason="reservation_exceeded",
                details={"reservation_remaining_fen": remaining, "amount_fen": amount_fen})
        return [NewEvent("FundSpent", {
            "community_id": self.id, "project_id": project_id, "amount_fen": amount_fen,
            "receipt_ref": receipt_ref, "description": description,
            "reservation_remaining_fen": remaining - amount_fen})]

    def pay_reward(self, project_id: str, recipient_id: str, recipient_name: str, amount_fen: int,
                   reason: str) -> list[NewEvent]:
        _positive(amount_fen)
        self._require_balance(amount_fen, "the reward is", "amount_fen")
        return [NewEvent("FundRewardPaid", {
            "community_id": self.id, "project_id": project_id, "recipient_id": recipient_id,
            "recipient_name": recipient_name, "amount_fen": amount_fen, "reason": reason,
            "balance_after_fen": self.balance_fen - amount_fen})]

    def _require_balance(self, amount_fen: int, what: str, key: str) -> None:
        """The balance never goes negative: a 409 ``insufficient_fund`` naming both amounts."""
        if amount_fen > self.balance_fen:
            raise Conflict(f"insufficient community fund: the balance is {self.balance_fen} fen, {what} "
                           f"{amount_fen} fen", reason="insufficient_fund",
                           details={"balance_fen": self.balance_fen, key: amount_fen})

    # -- evolution ------------------------------------------------------------------------

    def _reservation(self, project_id: str) -> dict[str, int]:
        return self.reservations.setdefault(project_id, {"reserved": 0, "spent": 0, "released": 0})

    def on_FundCredited(self, data, _event) -> None:
        self.balance_fen += data["amount_fen"]
        self.credited_fen += data["amount_fen"]

    def on_FundReserved(self, data, _event) -> None:
        self.balance_fen -= data["amount_fen"]
        self.reserved_fen += data["amount_fen"]
        self._reservation(_holder(data))["reserved"] += data["amount_fen"]

    def on_FundReservationTransferred(self, data, _event) -> None:
        self._reservation(round_key(data["round_id"]))["released"] += data["amount_fen"]
        self._reservation(data["project_id"])["reserved"] += data["amount_fen"]

    def on_FundReservationReleased(self, data, _event) -> None:
        self.balance_fen += data["amount_fen"]
        self.reserved_fen -= data["amount_fen"]
        self.released_fen += data["amount_fen"]
        self._reservation(_holder(data))["released"] += data["amount_fen"]

    def on_FundSpent(self, data, _event) -> None:
        self.reserved_fen -= data["amount_fen"]
        self.spent_fen += data["amount_fen"]
        self._reservation(data["project_id"])["spent"] += data["amount_fen"]

    def on_FundRewardPaid(self, data, _event) -> None:
        self.balance_fen -= data["amount_fen"]
        self.rewards_fen += data["amount_fen"]

    def view(self) -> dict[str, Any]:
        return {
            "community_id": self.id, "balance_fen": self.balance_fen, "credited_fen": self.credited_fen,
            "reserved_fen": self.reserved_fen, "spent_fen": self.spent_fen,
            "released_fen": self.released_fen, "rewards_fen": self.rewards_fen, "version": self.version,
        }


def _positive(amount_fen: int) -> None:
    if not isinstance(amount_fen, int) or isinstance(amount_fen, bool) or amount_fen <= 0:
        raise DomainError("amount_fen must be a positive whole number of fen", reason="invalid_amount",
                          details={"amount_fen": "must be a positive integer (fen)"})


def round_key(round_id: str) -> str:
    """The fund's reservation key of a budgeting round (projects are keyed by their id)."""
    return f"round:{round_id}"


def _holder(data: dict[str, Any]) -> str:
    """Whose reservation a reserve or release event moves: a project's, or a round's."""
    return data["project_id"] if data.get("project_id") else round_key(data["round_id"])
