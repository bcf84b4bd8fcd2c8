"""Background tasks that never die silently: each runs under a supervisor that logs
an unexpected error with its traceback, counts it, waits (exponential backoff with
jitter) and runs the task again, and says meanwhile that the task is not running
(``on_change``: health and metrics listen). A task that returns is done; cancelling
it (at shutdown) stops it at once."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from sidecar.retry import backoff_delay

log = structlog.get_logger("hitl.tasks")


@dataclass
class TaskState:
    name: str
    running: bool = True
    failures: int = 0


class Supervisor:
    def __init__(
        self,
        on_change: Callable[[TaskState], None] | None = None,
        backoff_base_seconds: float = 0.5,
        backoff_cap_seconds: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.tasks: dict[str, TaskState] = {}
        self.on_change = on_change
        self._base = backoff_base_seconds
        self._cap = backoff_cap_seconds
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)

    async def run(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run work until it returns, again after each unexpected error."""
        state = self.tasks.setdefault(name, TaskState(name))
        attempt = 0
        while True:
            try:
                await work()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                state.failures += 1
                self._change(state, running=False)
                delay = backoff_delay(attempt, self._base, self._cap, self._rng)
                log.error(
                    "task.failed",
                    task=name,
                    failures=state.failures,
                    retry_in_seconds=round(delay, 3),
                    error=repr(exc),
                    exc_info=exc,
                )
                attempt += 1
                await asyncio.sleep(delay)
                self._change(state, running=True)
                log.info("task.restarted", task=name, failures=state.failures)

    def _change(self, state: TaskState, *, running: bool) -> None:
        state.running = running
        if self.on_change is not None:
            self.on_change(state)


class BackgroundThread:
    """A task in a daemon thread of its own, named name: ``_main`` runs there until
    ``_stopping`` is set, and ``stop`` sets it and returns once ``_main`` has. Its
    ``state`` is exported as the supervisor's tasks are."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = TaskState(name)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _main(self) -> None:
        raise NotImplementedError


class Periodic(BackgroundThread):
    """work at once, then every ``seconds``, in a thread of its own (for a blocking
    service: the review queue's overdue sweep, the feedback service's dead letters).
    A run that fails, whatever the error, is logged with its traceback and counted in
    ``state.failures`` (exported as the supervisor's tasks are), and the next one runs
    on time: the thread never dies. ``stop`` returns once the run in progress has
    finished."""

    def __init__(self, name: str, seconds: float, work: Callable[[], object]) -> None:
        super().__init__(name)
        self._seconds = seconds
        self._work = work

    def _main(self) -> None:
        while True:
            try:
                self._work()
            except Exception as exc:
                self.state.failures += 1
                log.error("task.failed", task=self.name, error=repr(exc), exc_info=exc)
            if self._stopping.wait(self._seconds):
                return
