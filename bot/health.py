"""Is the process fit to serve? Adapters report their connection state here; ``check`` adds a
trivial query on the ledger's connection and says which part, if any, is down.

``/healthz`` (``adapters.ops``) renders the report; nothing here knows about HTTP or any
platform.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "CONNECTED",
    "DISCONNECTED",
    "STARTING",
    "Health",
    "HealthReport",
    "Pingable",
    "Probe",
    "check",
]

log = logging.getLogger(__name__)

STARTING = "starting"
CONNECTED = "connected"
DISCONNECTED = "disconnected"

DATABASE_TIMEOUT_S = 2.0
PROBE_TIMEOUT_S = 2.0

Probe = Callable[[], Awaitable[bool]]


class Pingable(Protocol):
    async def ping(self) -> None:
        """Return when the database answers; raise otherwise."""
        ...


class Health:
    """The state of each configured adapter: ``starting`` until it first connects, then
    ``connected`` or ``disconnected`` as it reports. Only ``connected`` counts as up.

    An adapter whose SDK reconnects on its own without telling anyone can instead register a
    ``probe`` (is it connected now?), which ``check`` asks while the adapter is connected."""

    def __init__(self) -> None:
        self._states: dict[str, str] = {}
        self._probes: dict[str, Probe] = {}
        self._draining = asyncio.Event()

    def drain(self) -> None:
        """The process is stopping: adapters stop taking new events (a peer gets them) and
        ``/healthz`` answers 503, so a load balancer moves away, while accepted jobs finish."""
        if not self._draining.is_set():
            log.info("draining: no new events; finishing the jobs already accepted")
        self._draining.set()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    async def drained(self) -> None:
        """Return once ``drain`` was called."""
        await self._draining.wait()

    def expect(self, name: str) -> None:
        """Register an adapter that is configured but has not connected yet."""
        self._states.setdefault(name, STARTING)

    def set(self, name: str, state: str) -> None:
        previous = self._states.get(name)
        self._states[name] = state
        if previous != state:
            log.info("%s: %s", name, state)

    def probe(self, name: str, probe: Probe | None) -> None:
        """Ask ``probe`` at each check whether ``name`` is still connected (``None``: stop)."""
        if probe is None:
            self._probes.pop(name, None)
        else:
            self._probes[name] = probe

    @property
    def adapters(self) -> dict[str, str]:
        """A copy: adapter name -> state, as last reported."""
        return dict(self._states)

    async def current(self) -> dict[str, str]:
        """Adapter name -> state, asking the probes of the adapters reported connected."""
        states = dict(self._states)
        for name, probe in list(self._probes.items()):
            if states.get(name) != CONNECTED:
                continue
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    up = await probe()
            except Exception as exc:
                log.warning("health check: %s probe failed (%s)", name, type(exc).__name__)
                up = False
            if not up:
                states[name] = DISCONNECTED
        return states


@dataclass(frozen=True, slots=True)
class HealthReport:
    database: str
    adapters: Mapping[str, str]
    draining: bool = False

    @property
    def ok(self) -> bool:
        return (
            not self.draining
            and self.database == "ok"
            and all(s == CONNECTED for s in self.adapters.values())
        )

    def as_json(self) -> dict[str, object]:
        status = "draining" if self.draining else "ok" if self.ok else "down"
        return {"status": status, "database": self.database, "adapters": dict(self.adapters)}


async def check(health: Health, database: Pingable) -> HealthReport:
    """The adapters' states as reported, and whether the database answers within
    ``DATABASE_TIMEOUT_S`` seconds."""
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT_S):
            await database.ping()
        state = "ok"
    except Exception as exc:
        log.warning("health check: the database does not answer (%s)", type(exc).__name__)
        state = "down"
    return HealthReport(database=state, adapters=await health.current(), draining=health.draining)
