"""Domain tests without a database: decided events stored in memory as the event store would."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from datetime import datetime, timezone

from services.kernel.events import StoredEvent
from services.kernel.model import Aggregate

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=timezone.utc)  # a Monday, 09:00 in Xiamen


class Log:
    """Per-stream versions, one global position; ``record`` applies what it stores."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at  # the time recorded events carry unless ``record`` is told another
        self.position = 0
        self.streams: dict[str, list[StoredEvent]] = defaultdict(list)

    def record(self, state, events, at: datetime | None = None) -> list[StoredEvent]:
        at = at or self.at
        stored = []
        for new in events:
            self.position += 1
            event = StoredEvent(event_id=new.event_id, event_type=new.event_type,
                                schema_version=new.schema_version, stream_id=state.stream_id,
                                version=state.version + 1, position=self.position, occurred_at=at,
                                data=dict(new.data), metadata={})
            state.apply(event)
            self.streams[state.stream_id].append(event)
            stored.append(event)
        return stored


def kinds(events) -> list[str]:
    return [e.event_type for e in events]


@dataclasses.dataclass
class Crate(Aggregate):
    """The smallest aggregate, for the kernel's tests on a real store (a unit of work, a view):
    ``Packed`` events add ``n`` items."""

    stream_prefix = "crate"
    items: int = 0

    def on_Packed(self, data, _event):
        self.items += data["n"]
