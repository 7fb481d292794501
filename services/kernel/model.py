"""The domain's kernel: what every service's domain modules may import, and nothing else.

Standard library only (an import-contract test keeps it so): the aggregate base, the event an
aggregate decides (:class:`NewEvent`), the named refusals (:class:`DomainError` and its kinds),
the caller (:class:`Principal`), and the platform's time helpers. The rest of the kernel (storage,
HTTP, tokens, Kafka) builds on this module; this module builds on nothing of it, so that a domain
is read, and unit-tested, without a database, a web framework or a token library.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, TypeVar

A = TypeVar("A", bound="Aggregate")


# -- refusals ------------------------------------------------------------------------------------

class DomainError(Exception):
    """A command refused for a domain reason. ``reason`` is a stable machine-readable code."""

    status = 422
    reason = "domain_rule"

    def __init__(self, message: str, *, reason: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.details = details or {}


class NotFound(DomainError):
    status = 404
    reason = "not_found"


class Forbidden(DomainError):
    status = 403
    reason = "forbidden"


class Conflict(DomainError):
    """The command contradicts the current state (already voted, insufficient fund, ...)."""

    status = 409
    reason = "conflict"


class ConcurrencyError(Conflict):
    """Someone else appended to the stream first: reload and decide again."""

    reason = "concurrency_conflict"

    def __init__(self, stream_id: str, expected_version: int, actual_version: int | None):
        actual = "unknown" if actual_version is None else str(actual_version)
        super().__init__(
            f"stream {stream_id} is at version {actual}, expected {expected_version}",
            details={"stream_id": stream_id, "expected_version": expected_version,
                     "actual_version": actual_version},
        )
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual_version


class Unauthenticated(DomainError):
    status = 401
    reason = "unauthenticated"


# -- events and time -----------------------------------------------------------------------------

class EnvelopeError(ValueError):
    """A record does not hold a valid event envelope (a poison message for consumers)."""


@dataclasses.dataclass(frozen=True)
class NewEvent:
    """An event decided by an aggregate, not yet stored."""

    event_type: str
    data: Mapping[str, Any]
    schema_version: int = 1
    event_id: str = dataclasses.field(default_factory=lambda: new_event_id())


def new_event_id() -> str:
    """A new event id: a UUID version 7 (RFC 9562) — 48 bits of Unix milliseconds, then 74 random bits.

    Ids made later sort later, so the log's unique index on ``event_id`` grows at its right edge
    instead of taking a write on a random page for every event (issue 23: batches of 100 events
    append about 1.7× faster than with random UUIDs). The milliseconds tell no more than the
    ``occurred_at`` that travels with every envelope; event ids are shown only where that is shown
    too (the admin event routes, the live feed to staff), never in place of a rating's day-only time.
    """
    rand = _random_bits(74)  # ids need to be unique, not secret: no system call per id
    value = ((time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 62) << 64
             | 0b10 << 62 | rand & 0x3FFF_FFFF_FFFF_FFFF)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_correlation_id() -> str:
    """A new correlation id for a request that brought none: a random UUID (version 4) made from
    Python's generator, as :func:`new_event_id` makes its random bits. A correlation id ties a
    request's log lines and events together; it needs to be unique, not secret, so no system call
    for it (``uuid.uuid4`` reads ``os.urandom``: a third of the hook that opens every request)."""
    value = _random_bits(128) & _V4_CLEAR | _V4_SET
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_V4_CLEAR = ~(0xF << 76 | 0x3 << 62)  # the version's four bits and the variant's two
_V4_SET = 0x4 << 76 | 0b10 << 62


# Python's generator: seeded from the system's entropy at start and again in every forked child
# (gunicorn workers), so two processes never share a sequence.
_random_bits = random.getrandbits


# China Standard Time (UTC+8, no daylight saving): the neighbourhoods' calendar days, for daily
# caps, leaderboard months, rating periods and working-day deadlines. Times are stored in UTC.
LOCAL_TZ = timezone(timedelta(hours=8), "CST")


def local_date(moment: datetime) -> str:
    """The calendar date (YYYY-MM-DD) of ``moment`` in China Standard Time."""
    return moment.astimezone(LOCAL_TZ).date().isoformat()


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: times must be timezone-aware")
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise EnvelopeError("occurred_at must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise EnvelopeError(f"occurred_at is not ISO 8601: {text!r}") from None
    if moment.tzinfo is None:
        raise EnvelopeError("occurred_at must carry a time zone")
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise EnvelopeError(f"occurred_at is out of range: {text!r}") from None


# -- aggregates ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Aggregate:
    """Base state of an event-sourced aggregate. ``version`` is the stream version applied last."""

    stream_prefix: ClassVar[str] = ""
    label: ClassVar[str] = "aggregate"
    # Fields a state written by an earlier release may hold that the class keeps no longer (a value
    # now derived from the others): dropped as such a state is read, left out when it is written again.
    retired: ClassVar[frozenset[str]] = frozenset()

    id: str
    version: int = 0
    created_at: str | None = None
    updated_at: str | None = None

    @classmethod
    def stream_id_for(cls, aggregate_id: str) -> str:
        return f"{cls.stream_prefix}-{aggregate_id}"

    @property
    def stream_id(self) -> str:
        return self.stream_id_for(self.id)

    @property
    def exists(self) -> bool:
        return self.version > 0

    def apply(self, event: Any) -> None:
        """Apply one stored event (anything with ``event_type``, ``data``, ``occurred_at`` and ``version``)."""
        handler = getattr(self, f"on_{event.event_type}", None)
        if handler is not None:
            handler(event.data, event)
        stamp = event.occurred_at.isoformat().replace("+00:00", "Z")
        if self.created_at is None:
            self.created_at = stamp
        self.updated_at = stamp
        self.version = event.version

    @classmethod
    def replay(cls: type[A], aggregate_id: str, events: Sequence[Any]) -> A:
        state = cls(id=aggregate_id)
        for event in events:
            state.apply(event)
        return state

    def to_json(self) -> str:
        # Fields hold JSON values only, so the encoder can walk them as they are: no deep copy
        # (``dataclasses.asdict``) of a state that may hold hundreds of ballots or claims.
        fields = {name: getattr(self, name) for name in _field_names(type(self))}
        return _state_codec[0](fields)

    @classmethod
    def from_json(cls: type[A], text: str | bytes) -> A:
        return cls.from_fields(_state_codec[1](text))

    @classmethod
    def from_fields(cls: type[A], fields: dict[str, Any]) -> A:
        """The state of a decoded JSON object (``fields``, which it may keep): its retired fields
        dropped, a field added since taking its default."""
        if cls.retired and not cls.retired.isdisjoint(fields):
            fields = {name: value for name, value in fields.items() if name not in cls.retired}
        if fields.keys() == _plain_fields(cls):
            # Every field given and nothing else: the instance is what ``__init__`` would make of
            # them, without it (a dataclass's ``__init__`` was two thirds of reading a project's
            # state: issue 23). A state written before a field existed, or one whose class checks
            # its fields (``__post_init__``), goes through ``__init__``.
            state = _new_object(cls)
            state.__dict__.update(fields)
            return state
        return cls(**fields)


def _canonical(fields: Mapping[str, Any]) -> str:
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


# How states are written as JSON and read back: the standard library's canonical text (sorted keys,
# compact, UTF-8) here, where only the standard library is imported; the infrastructure installs a
# faster codec that writes the same text (services.kernel.aggregate: msgspec; issue 23).
_state_codec: list[Callable[..., Any]] = [_canonical, json.loads]


def use_state_codec(dumps: Callable[[Mapping[str, Any]], str], loads: Callable[[str | bytes], Any]) -> None:
    """Write and read aggregate states with ``dumps`` (the same canonical text) and ``loads``."""
    _state_codec[:] = [dumps, loads]


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@functools.cache
def _plain_fields(cls: type) -> frozenset[str] | None:
    """The names of ``cls``'s fields when its instances may be made without ``__init__`` (every
    field an ``__init__`` argument, no ``__post_init__``, no slots), else None."""
    fields = dataclasses.fields(cls)
    if hasattr(cls, "__post_init__") or hasattr(cls, "__slots__") or not all(f.init for f in fields):
        return None
    return frozenset(f.name for f in fields)


_new_object = object.__new__


# -- the caller ----------------------------------------------------------------------------------

# The platform's roles, defined here once: a token's ``roles`` claim, the gateway's users file, the
# services' role gates (``x-roles`` in the OpenAPI documents) and role constants all use these names,
# and the OpenAPI documents describe the bearer token with this table. Role (and field) names are
# spelt ``organiser``; tokens and users files written with the earlier ``organizer`` still work
# (:data:`LEGACY_ROLE_ALIASES`), but the platform never writes that spelling.
ROLE_MEANINGS: dict[str, tuple[str, str]] = {
    "resident": ("居民:提出与联署项目、发表意见、认捐、评议与评价",
                 "a resident of a community: proposes and co-signs projects, comments, pledges, rates"),
    "representative": ("居民代表:在居民代表会议上表决项目",
                       "a residents' representative: votes on projects in the council (and acts as a resident)"),
    "volunteer": ("志愿者:持志愿者证、报名活动、签到签退、兑换积分",
                  "a volunteer: holds a volunteer card, signs up for activities, checks in and out, redeems points"),
    "grid_worker": ("网格员:确认投入、记录管护、处理问题与评价工单",
                    "a grid worker: confirms deliveries, logs maintenance, resolves problems and feedback cases"),
    "cadre": ("社区干部:管理社区、表决与评议、基金、奖励与排名",
              "a community cadre: runs the community, its votes and evaluations, fund, rewards and rankings"),
    "organiser": ("活动组织者(社工站、社会组织):发布活动、审核时长、开具证明",
                  "an activity organiser (social work station, social organisation): publishes activities, "
                  "approves volunteer hours, issues certificates"),
    "admin": ("平台管理员:跨社区管理、登记社区、查看事件历史",
              "a platform administrator: every community, registers communities, reads the event history"),
}
ROLES: tuple[str, ...] = tuple(ROLE_MEANINGS)

# Earlier spellings still read (from tokens and users files) and normalised; never written.
LEGACY_ROLE_ALIASES: dict[str, str] = {"organizer": "organiser"}


def canonical_role(name: str) -> str | None:
    """The platform's name for the role ``name`` (a legacy alias gives its current name), or None
    for a name that is no role of the platform."""
    name = LEGACY_ROLE_ALIASES.get(name, name)
    return name if name in ROLE_MEANINGS else None


def role_names(*names: str) -> tuple[str, ...]:
    """``names``, each checked to be a role of the platform (its current spelling): for the role
    constants of the services, so that a misspelt role fails when the module is imported."""
    unknown = [name for name in names if name not in ROLE_MEANINGS]
    if unknown:
        raise ValueError(f"unknown roles {unknown}; the roles are: {', '.join(ROLES)}")
    return names


@dataclasses.dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    person_id: str
    name: str
    roles: frozenset[str]
    community: str | None
    token: str = dataclasses.field(repr=False, default="")

    def has_any(self, roles: Iterable[str]) -> bool:
        return bool(self.roles.intersection(roles))

    def require(self, *roles: str) -> None:
        if not self.has_any(roles):
            raise Forbidden(f"this action needs one of the roles: {', '.join(roles)}", reason="role_required",
                            details={"roles": list(roles)})


    def require_reader(self, community_id: str | None) -> None:
        """A read of a record of ``community_id``: admins read every community; any other token
        only its own (403 ``other_community``), and a token without a community nothing that
        belongs to a community (403 ``community_required``)."""
        if "admin" in self.roles:
            return
        if not self.community:
            raise Forbidden("this read is open only to a token of a community", reason="community_required")
        if community_id is not None and community_id != self.community:
            raise Forbidden(f"this read is open only to members of community {community_id}",
                            reason="other_community")

    def reading_community(self, asked: str | None) -> str | None:
        """The community a list reads: the one asked for (admins: None is every community), which
        for any other token must be, and defaults to, the token's own."""
        if "admin" in self.roles:
            return asked
        self.require_reader(asked)
        return self.community


def require_member(actor: Principal, community_id: str, roles: tuple[str, ...]) -> None:
    """The actor holds one of ``roles`` and belongs to ``community_id`` (admins: any community,
    when the action is open to cadres or admins)."""
    if "admin" in actor.roles and ("admin" in roles or "cadre" in roles):
        return
    actor.require(*roles)
    if actor.community != community_id:
        raise Forbidden(f"this action is open only to members of community {community_id}",
                        reason="other_community")



# -- personal data ------------------------------------------------------------------------------

SEALED_PREFIX, MASKED_PHONE_PREFIX = "pii1.", "pii1m."  # services.kernel.personal's tokens


def mask_phone(phone: str) -> str:
    """``138****5678`` for a mobile number; shorter numbers show at most their last half. A sealed
    phone (``pii1.…``, :mod:`services.kernel.personal`) becomes a token that opens masked."""
    if phone.startswith(SEALED_PREFIX):
        return MASKED_PHONE_PREFIX + phone[len(SEALED_PREFIX):]
    if len(phone) >= 11:
        return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
    tail = min(4, len(phone) // 2)
    return "*" * (len(phone) - tail) + (phone[-tail:] if tail else "")


# -- commands ------------------------------------------------------------------------------------

def command(cls: type) -> type:
    """Declare a command: a frozen, keyword-only dataclass (an imperative name, ``CastBallot``)
    that one handler of the service's message bus carries out."""
    return dataclasses.dataclass(frozen=True, kw_only=True)(cls)


def fields_of(cmd: Any) -> dict[str, Any]:
    """A command's fields as a dict (for a domain method that takes a record's fields)."""
    return {field.name: getattr(cmd, field.name) for field in dataclasses.fields(cmd)}
