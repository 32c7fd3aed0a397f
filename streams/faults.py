"""Living with faults: retries with back-off, and failpoints that tests use to crash the job."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Stopping(Exception):
    """The job was asked to stop while it was waiting to retry."""


async def retry(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    stopping: asyncio.Event,
    first_delay_s: float = 0.5,
    max_delay_s: float = 30.0,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """Run `attempt` until it succeeds, doubling the wait between tries up to `max_delay_s`.

    Every failure is logged at WARNING with its reason and the next delay. Raises
    Stopping if `stopping` is set while waiting.
    """
    delay, tries = first_delay_s, 0
    while True:
        try:
            return await attempt()
        except retry_on as exc:
            tries += 1
            log.warning("%s failed (%s: %s); retry %d in %.1f s", what, type(exc).__name__,
                        exc, tries, delay)
        try:
            await asyncio.wait_for(stopping.wait(), delay)
        except asyncio.TimeoutError:
            pass
        else:
            raise Stopping(what)
        delay = min(delay * 2, max_delay_s)


class Failpoints:
    """`PHASE:WINDOW` from MBNMRN_CRASH_AT: kill this process with SIGKILL the first time
    PHASE is reached for window WINDOW or a later one (lists and checkpoints can cover
    several windows at once, see MBNMRN_PUBLISH_INTERVAL_S)."""

    def __init__(self, spec: str) -> None:
        self.phase, _, window = spec.partition(":")
        self.window = int(window) if window else -1

    def reach(self, phase: str, window: int) -> None:
        if phase == self.phase and window >= self.window >= 0:
            log.warning("failpoint %s:%d reached at window %d: killing the worker (SIGKILL)",
                        phase, self.window, window)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
