"""A byte budget: how many bytes of provider answers one client holds in memory at once.

Each generation attempt takes a ``Lease`` and grows it as its answer's bytes arrive (the body,
then any downloads), shrinks it once the body is decoded, and releases it when the attempt
ends. A lease that would exceed the budget waits for others to release. One that asks for
more than the whole budget is never refused: it waits until it is the only lease holding
anything, then is granted alone, so the budget caps memory at the larger of itself and one
answer (which the caller's own size caps bound), and a small budget costs big answers only
some waiting.

Requests are served in order, leases already holding bytes first: an answer that is half
read finishes before a new one starts, so memory is freed sooner. When every lease holding
bytes is itself waiting for more, nothing would ever be released; then the first of them is
granted its bytes anyway (the budget is overdrawn by at most one answer's remaining bytes),
so the client cannot deadlock.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

__all__ = ["ByteBudget", "Lease"]


@dataclass(eq=False, slots=True)
class _Request:
    lease: Lease
    amount: int
    granted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ByteBudget:
    """``total`` bytes shared by every lease taken from it (one event loop)."""

    def __init__(self, total: int) -> None:
        if total <= 0:
            raise ValueError("a byte budget must be positive")
        self.total = total
        self.used = 0
        self._holders = 0  # leases holding more than 0 bytes
        self._waiting: deque[_Request] = deque()

    def lease(self) -> Lease:
        return Lease(self)

    @property
    def waiting(self) -> int:
        """Leases waiting for bytes now."""
        return sum(1 for request in self._waiting if not request.granted.done())

    def _grant(self, lease: Lease, amount: int) -> None:
        if lease.held == 0:
            self._holders += 1
        lease.held += amount
        self.used += amount

    def _give_back(self, lease: Lease, amount: int) -> None:
        lease.held -= amount
        self.used -= amount
        if lease.held == 0:
            self._holders -= 1
        self._serve()

    def _next(self) -> _Request | None:
        """The request to serve next: holders' first, each group in arrival order."""
        live = [r for r in self._waiting if not r.granted.done()]
        self._waiting = deque(live)
        return next((r for r in live if r.lease.held), live[0] if live else None)

    def _fits(self, lease: Lease, amount: int) -> bool:
        """Within the budget, or the only lease holding anything (then whatever its size)."""
        return self.used + amount <= self.total or self.used == lease.held

    def _serve(self) -> None:
        while (request := self._next()) is not None:
            fits = self._fits(request.lease, request.amount)
            stuck = request.lease.held > 0 and self._holders == len(
                {id(r.lease) for r in self._waiting if r.lease.held}
            )
            if not (fits or stuck):
                return
            self._waiting.remove(request)
            self._grant(request.lease, request.amount)
            request.granted.set_result(None)


class Lease:
    """The bytes one attempt holds; ``held`` is their count."""

    __slots__ = ("_budget", "held")

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.held = 0

    def try_grow(self, amount: int) -> bool:
        """Take ``amount`` more bytes now if that needs no wait."""
        if amount <= 0:
            return True
        budget = self._budget
        ahead = any(r.lease.held for r in budget._waiting) if self.held else budget._waiting
        if ahead or not budget._fits(self, amount):
            return False
        budget._grant(self, amount)
        return True

    async def grow(self, amount: int) -> None:
        """Take ``amount`` more bytes, waiting for them if need be."""
        if self.try_grow(amount):
            return
        budget = self._budget
        request = _Request(self, amount)
        budget._waiting.append(request)
        budget._serve()
        try:
            await request.granted
        except asyncio.CancelledError:
            if not request.granted.cancelled():  # granted just before the cancellation
                budget._give_back(self, amount)
            else:
                budget._serve()  # it may have been holding others up
            raise

    def hold(self, amount: int) -> None:
        """Take ``amount`` more bytes now, over the budget if need be: for bytes already in
        memory, which waiting would not free; other leases wait for them instead."""
        if amount > 0:
            self._budget._grant(self, amount)

    def shrink_to(self, amount: int) -> None:
        """Hold only ``amount`` bytes from now on (no more than now)."""
        if 0 <= amount < self.held:
            self._budget._give_back(self, self.held - amount)

    def release(self) -> None:
        self.shrink_to(0)
