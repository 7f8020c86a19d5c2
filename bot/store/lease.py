"""Which process owns a job, and whether that process still runs.

Every process that opens the ledger records a *boot* (its id, this machine and process, and a
lease it renews every ``renew_every`` seconds). Each job it holds names that boot as its owner
and carries its own deadline. A job is an orphan, and is refunded, when its owner stopped
(a clean exit marks the boot stopped), its owner's lease ran out (a crash or a hang anywhere),
or its deadline passed. On the same machine a crash is seen at once: the owner's process id no
longer names a process started at the same moment, so a restart right after ``kill -9`` does
not wait for the lease to run out.

The same rows work on any database: PostgreSQL keeps the boot table and the lease columns as
they are, and the liveness check stays a local shortcut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

__all__ = [
    "INTERRUPTED",
    "LEASE",
    "ProcessIdentity",
    "keep_renewing",
    "renewing",
    "this_process",
]

log = logging.getLogger(__name__)

# A crashed process's jobs wait at most this long for a process on another machine (or in a
# new container) to refund them; renewed every third of it.
LEASE = timedelta(seconds=15)

# The refund reason of a job whose process stopped before settling it.
INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """``host`` names this machine and process namespace (processes with the same ``host``
    can see each other's ``/proc``); ``started`` tells a process from a later one that reused
    its pid. Both are empty where ``/proc`` is missing: then only the lease tells."""

    host: str
    pid: int
    started: str

    def alive(self) -> bool:
        """Whether this process still runs (only meaningful on the same ``host``)."""
        if not self.started:
            return True
        return _started(self.pid) == self.started


def this_process() -> ProcessIdentity:
    pid = os.getpid()
    started = _started(pid)
    if not started:
        return ProcessIdentity(host="", pid=pid, started="")
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ProcessIdentity(host="", pid=pid, started="")
    host = f"{socket.gethostname()}/{boot}/{namespace}"
    return ProcessIdentity(host=host, pid=pid, started=started)


def _started(pid: int) -> str:
    """The process's start time in clock ticks after boot (``/proc/<pid>/stat`` field 22),
    or ``""`` when there is no such process (or no ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses; the rest follows the last ")".
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


async def keep_renewing(renew: Callable[[], Awaitable[bool]], every: float) -> None:
    """Renew the lease every ``every`` seconds until cancelled; a failed renewal is logged and
    tried again at the next turn."""
    while True:
        await asyncio.sleep(every)
        try:
            if not await renew():
                log.error(
                    "this process's lease was taken over (it did not renew in time); jobs it "
                    "still runs may have been refunded by another process"
                )
        except Exception as exc:
            log.warning("could not renew the job lease (%s); trying again", type(exc).__name__)


@contextlib.asynccontextmanager
async def renewing(renew: Callable[[], Awaitable[bool]], every: float) -> AsyncIterator[None]:
    task = asyncio.create_task(keep_renewing(renew, every), name="lease-renewal")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
