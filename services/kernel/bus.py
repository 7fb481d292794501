"""The message bus: one handler per command, each run in one unit of work.

A command is a frozen, imperative dataclass (``CastBallot``, ``SubmitRating``): what a caller asks,
as data, loaded by its schema (HTTP) or built by a consumer or a job. A handler is a plain function
``handler(command, uow)`` that loads aggregates from the unit of work, asks them to decide, and
records their events; it returns what the caller needs to answer (usually the changed aggregate).

The bus owns what handlers must not reach for themselves: the store, the clock and the id factory,
all three injected by :func:`services.kernel.service.bootstrap` (tests inject a clock of their own
instead of replacing a module's function). ``handle`` opens the unit of work (or joins a consumer's
transaction), runs the handler, commits, and returns the handler's result with the recorded events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from services.kernel import metrics
from services.kernel.aggregate import Stale, UnitOfWork, new_id, unit_of_work
from services.kernel.events import Metadata, StoredEvent, utc_now
from services.kernel.model import Principal

log = logging.getLogger(__name__)

Handler = Callable[[Any, UnitOfWork], Any]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a handled command gave: the handler's result and the events recorded, in order."""

    result: Any
    recorded: list[StoredEvent]

    def first(self, event_type: str, key: str) -> Any:
        """``data[key]`` of the first recorded event of ``event_type`` (e.g. a new claim's id), or None."""
        return next((e.data[key] for e in self.recorded if e.event_type == event_type), None)


class MessageBus:
    """Dispatch each command to its one handler, in a unit of work on ``store``."""

    def __init__(self, store, handlers: Mapping[type, Handler], *,
                 clock: Callable[[], datetime] = utc_now, new_id: Callable[[], str] = new_id) -> None:
        for command_type in handlers:
            if not (dataclasses.is_dataclass(command_type)
                    and command_type.__dataclass_params__.frozen):  # type: ignore[attr-defined]
                raise TypeError(f"{command_type.__name__} is not a frozen dataclass")
        self.store = store
        self.handlers = dict(handlers)
        self.clock = clock
        self.new_id = new_id

    def handle(self, command: Any, *, actor: Principal | None = None, metadata: Metadata | None = None,
               connection=None) -> Outcome:
        """Run ``command``'s handler and commit; a refusal (a domain error) changes nothing.

        ``connection`` joins a transaction the caller holds (a consumer's, with its inbox row).
        What the caller answers with is read after this returns, outside the write transaction:
        on SQLite the writers of a file take turns for the whole transaction (issue 23: a
        project's page read inside it held the turn a fifth longer, and two workers waited on
        each other for it)."""
        handler = self.handlers.get(type(command))
        if handler is None:
            raise LookupError(f"no handler for the command {type(command).__name__}")
        if connection is None and getattr(handler, "reads_first", False):
            try:
                uow, result = self._reading_first(handler, command, actor, metadata)
            except Stale:  # a stream it loaded moved before its first write: again, in the turn throughout
                metrics.COMMANDS_RERUN.labels(type(command).__name__).inc()
            else:
                for done in uow.committed:
                    done()
                return Outcome(result, list(uow.recorded))
        with unit_of_work(self.store, metadata, connection=connection, clock=self.clock,
                          new_id=self.new_id, actor=actor) as uow:
            result = handler(command, uow)
        if connection is None:  # committed: a joined transaction commits later, with its caller
            for done in uow.committed:
                done()
        return Outcome(result, list(uow.recorded))

    def _reading_first(self, handler: Handler, command: Any, actor: Principal | None,
                       metadata: Metadata | None) -> tuple[UnitOfWork, Any]:
        """Run a :func:`~services.kernel.aggregate.reads_first` handler: in a read transaction until
        its first record, then in the write transaction (:class:`UnitOfWork` checks there that what
        it loaded has not moved, else :class:`Stale`, and nothing is written). A handler that
        records nothing never takes the writers' turn."""
        with contextlib.ExitStack() as reading, contextlib.ExitStack() as writing:
            def start_writing():
                reading.close()  # the read snapshot ends before the turn is taken
                connection = writing.enter_context(self.store.write_transaction())
                self.store.lock_for_write(connection)
                return connection

            uow = UnitOfWork(self.store, reading.enter_context(self.store.read_transaction()),
                             metadata or Metadata(), self.clock, self.new_id, actor, start_writing=start_writing)
            return uow, handler(command, uow)
