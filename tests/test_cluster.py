"""The cluster-wide fair queue (``bot.cluster``) on a real PostgreSQL: two schedulers, each
with its own store (its own boot, as two bot processes have), on one database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.cluster import ClusterScheduler, ClusterTicket
from bot.errors import (
    JobCancelledError,
    JobHandedOverError,
    ProviderRateLimitedError,
    ServerBusyError,
    TooManyJobsError,
)
from bot.models import QueueStatus, Requester
from bot.scheduler import Withdrawal
from bot.store.database import Store, open_store
from bot.store.postgres.ledger import PostgresLedger
from bot.store.postgres.queue import PostgresQueue
from tests.fakes.postgres import database_url
from tests.ledger_support import request, requester


@dataclass
class Node:
    """One "process": its store and its scheduler."""

    store: Store
    scheduler: ClusterScheduler
    adopted: list[tuple[str, Mapping[str, str]]] = field(default_factory=list)
    adopting: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ledger(self) -> PostgresLedger:
        ledger = self.store.ledger
        assert isinstance(ledger, PostgresLedger)
        return ledger

    async def hold(self, who: Requester, reach: Mapping[str, str] | None = None) -> str:
        held = await self.ledger.hold(
            requester=who, request=request(), cost_micros=1000, reach=reach
        )
        return held.job_id


class Provider:
    """Provider calls that finish when the test says so, counting how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.started: list[str] = []
        self.release = asyncio.Event()
        self.changed = asyncio.Event()

    def call(self, job_id: str) -> Any:
        async def run() -> str:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.started.append(job_id)
            self.changed.set()
            try:
                await self.release.wait()
            finally:
                self.running -= 1
            return job_id

        return run

    async def until(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.started) < count:
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def node(
    url: str, *, platforms: tuple[str, ...] = ("discord",), **options: Any
) -> AsyncIterator[Node]:
    store = await open_store(url)
    ledger = store.ledger
    assert isinstance(ledger, PostgresLedger)
    scheduler = ClusterScheduler(
        PostgresQueue(ledger.pool, lambda: ledger.boot_id),
        dsn=url,
        now=ledger.now,
        poll=0.2,
        **options,
    )
    here = Node(store, scheduler)

    async def adopt(
        ticket: ClusterTicket, reach: Mapping[str, str], deadline: float | None
    ) -> None:
        await ledger.charge(ticket.job_id, images=1, cost_micros=1000)
        here.adopted.append((ticket.job_id, reach))
        here.adopting.set()

    scheduler.adopt_with(adopt, lambda: platforms)
    await scheduler.start()
    try:
        yield here
    finally:
        await scheduler.close(0)
        await store.close()


async def run(
    target: Node,
    job_id: str,
    who: Requester,
    provider: Provider,
    admitted: asyncio.Event | None = None,
) -> str:
    async with target.scheduler.admit(job_id, who) as ticket:
        if admitted is not None:
            admitted.set()
        result: str = await ticket.call(provider.call(job_id))
        return result


async def test_the_cap_holds_across_processes(tmp_path: Path) -> None:
    url = database_url(str(tmp_path))
    provider = Provider()
    async with (
        node(url, max_concurrent=3, max_per_user=10) as a,
        node(url, max_concurrent=3, max_per_user=10) as b,
    ):
        tasks = []
        for i in range(10):
            target = (a, b)[i % 2]
            who = requester(f"user{i}")
            job = await target.hold(who)
            tasks.append(asyncio.create_task(run(target, job, who, provider)))
        await provider.until(3)
        assert provider.running == 3
        provider.release.set()
        async with asyncio.timeout(20):
            done = await asyncio.gather(*tasks)
        assert len(done) == 10
        assert provider.peak == 3
        figures = await a.scheduler._queue.figures()
        assert (figures.queued, figures.running) == (0, 0)


async def test_the_per_user_cap_counts_every_process(tmp_path: Path) -> None:
    url = database_url(str(tmp_path))
    provider = Provider()
    alice = requester("alice")
    async with (
        node(url, max_concurrent=1, max_per_user=2) as a,
        node(url, max_concurrent=1, max_per_user=2) as b,
    ):
        admitted = [asyncio.Event(), asyncio.Event()]
        first = asyncio.create_task(run(a, await a.hold(alice), alice, provider, admitted[0]))
        second = asyncio.create_task(run(b, await b.hold(alice), alice, provider, admitted[1]))
        # Both in the queue before the third asks: a job may start within its admission,
        # so the first provider call can begin before the second job is admitted.
        async with asyncio.timeout(10):
            await asyncio.gather(*(event.wait() for event in admitted))
        await provider.until(1)
        with pytest.raises(TooManyJobsError):
            async with asyncio.timeout(10):
                await run(b, await b.hold(alice), alice, provider)
        provider.release.set()
        async with asyncio.timeout(10):
            await asyncio.gather(first, second)


async def test_a_newcomer_is_not_stuck_behind_a_queue_of_another_process(
    tmp_path: Path,
) -> None:
    url = database_url(str(tmp_path))
    provider = Provider()
    alice, bob = requester("alice"), requester("bob", workspace="G2")
    async with (
        node(url, max_concurrent=1, max_per_user=30) as a,
        node(url, max_concurrent=1, max_per_user=30) as b,
    ):
        admitted = [asyncio.Event() for _ in range(21)]
        tasks = [
            asyncio.create_task(run(a, await a.hold(alice), alice, provider, admitted[i]))
            for i in range(20)
        ]
        await provider.until(1)
        bobs = await b.hold(bob)
        tasks.append(asyncio.create_task(run(b, bobs, bob, provider, admitted[20])))
        # Every job in the queue before the first slot frees.
        async with asyncio.timeout(10):
            await asyncio.gather(*(event.wait() for event in admitted))
        provider.release.set()
        async with asyncio.timeout(30):
            await asyncio.gather(*tasks)
        assert provider.started.index(bobs) == 1


async def test_a_queued_job_is_cancelled_from_another_process(tmp_path: Path) -> None:
    url = database_url(str(tmp_path))
    provider = Provider()
    alice = requester("alice")
    async with (
        node(url, max_concurrent=1, max_per_user=5) as a,
        node(url, max_concurrent=1, max_per_user=5) as b,
    ):
        first = asyncio.create_task(run(a, await a.hold(alice), alice, provider))
        await provider.until(1)
        waiting = await a.hold(alice)
        admitted = asyncio.Event()
        second = asyncio.create_task(run(a, waiting, alice, provider, admitted))
        async with asyncio.timeout(10):
            await admitted.wait()
        assert await b.scheduler.withdraw(waiting) is Withdrawal.WAITER_REFUNDS
        with pytest.raises(JobCancelledError):
            async with asyncio.timeout(10):
                await second
        provider.release.set()
        await first


async def test_a_stopping_process_hands_its_queued_jobs_over(tmp_path: Path) -> None:
    url = database_url(str(tmp_path))
    provider = Provider()
    alice = requester("alice")
    async with node(url, max_concurrent=1, max_per_user=5) as b:
        async with node(url, max_concurrent=1, max_per_user=5) as a:
            first = asyncio.create_task(run(a, await a.hold(alice), alice, provider))
            await provider.until(1)
            queued = await a.hold(alice, reach={"channel": "C1"})
            admitted = asyncio.Event()
            second = asyncio.create_task(run(a, queued, alice, provider, admitted))
            async with asyncio.timeout(10):
                await admitted.wait()
            closing = asyncio.create_task(a.scheduler.close(5))
            with pytest.raises(JobHandedOverError):
                async with asyncio.timeout(10):
                    await second
            provider.release.set()
            await first
            await closing
        async with asyncio.timeout(10):
            await b.adopting.wait()
        assert b.adopted == [(queued, {"channel": "C1"})]
        record = await b.ledger.job(queued)
        assert record.state.value == "charged"


async def test_a_waiting_member_sees_their_place_move_up_across_processes(
    tmp_path: Path,
) -> None:
    url = database_url(str(tmp_path))
    provider = Provider()
    places: list[int] = []
    moved = asyncio.Event()

    async def progress(status: QueueStatus) -> None:
        places.append(status.ahead)
        moved.set()

    async with (
        node(url, max_concurrent=1, max_per_user=5) as a,
        node(url, max_concurrent=1, max_per_user=5) as b,
    ):
        first = asyncio.create_task(
            run(a, await a.hold(requester("u0")), requester("u0"), provider)
        )
        await provider.until(1)
        ahead = [
            asyncio.create_task(
                run(a, await a.hold(requester(f"u{i}")), requester(f"u{i}"), provider)
            )
            for i in (1, 2)
        ]
        carol = requester("carol", workspace="G9")
        job = await b.hold(carol)

        async def watched() -> str:
            async with b.scheduler.admit(job, carol) as ticket:
                result: str = await ticket.call(provider.call(job), progress=progress)
                return result

        mine = asyncio.create_task(watched())
        async with asyncio.timeout(10):
            while not places:
                moved.clear()
                await moved.wait()
        provider.release.set()
        async with asyncio.timeout(20):
            await asyncio.gather(first, *ahead, mine)
    # Queued behind the two others (a server never served goes first, so at most 2 ahead),
    # then running: the places only go down.
    assert places[0] <= 2
    assert places == sorted(places, reverse=True)
    assert places[-1] == 0


async def test_a_rate_limit_in_one_process_slows_every_process(tmp_path: Path) -> None:
    url = database_url(str(tmp_path))
    alice, bob = requester("alice"), requester("bob")
    async with (
        node(url, max_concurrent=4, max_per_user=5) as a,
        node(url, max_concurrent=4, max_per_user=5) as b,
    ):
        job = await a.hold(alice)
        calls: list[str] = []

        async def limited_once() -> str:
            calls.append("call")
            if len(calls) == 1:
                raise ProviderRateLimitedError("slow down", retry_after=0.2)
            return "drawn"

        async with a.scheduler.admit(job, alice) as ticket:
            assert await ticket.call(limited_once) == "drawn"  # retried after the hold
        assert calls == ["call", "call"]
        figures = await b.scheduler._queue.figures()
        assert figures.concurrency == 2  # halved for the whole cluster, not only for A
        provider = Provider()
        provider.release.set()
        later = await b.hold(bob)
        assert await run(b, later, bob, provider) == later


async def test_the_per_server_cap_counts_every_process(tmp_path: Path) -> None:
    url = database_url(str(tmp_path))
    provider = Provider()
    options = {"max_concurrent": 1, "max_per_user": 5, "max_per_server": 2}
    async with node(url, **options) as a, node(url, **options) as b:
        ann, bob, cy = requester("ann"), requester("bob"), requester("cy")
        first = asyncio.create_task(run(a, await a.hold(ann), ann, provider))
        admitted = asyncio.Event()
        second = asyncio.create_task(run(b, await b.hold(bob), bob, provider, admitted))
        async with asyncio.timeout(10):
            await admitted.wait()
        with pytest.raises(ServerBusyError):
            await run(b, await b.hold(cy), cy, provider)
        dee = requester("dee", workspace="G2")
        provider.release.set()
        assert await run(a, await a.hold(dee), dee, provider)  # another server is not capped
        async with asyncio.timeout(10):
            await asyncio.gather(first, second)
        # Both places are free again.
        assert await run(b, await b.hold(cy), cy, provider)


async def test_a_handed_over_job_nobody_waits_for_is_the_canceller_s_to_refund(
    tmp_path: Path,
) -> None:
    url = database_url(str(tmp_path))
    provider = Provider()
    alice = requester("alice")
    # B runs no platform, so it adopts nothing: the handed-over job stays queued.
    async with (
        node(url, max_concurrent=1, max_per_user=5, platforms=()) as b,
        node(url, max_concurrent=1, max_per_user=5) as a,
    ):
        first = asyncio.create_task(run(a, await a.hold(alice), alice, provider))
        await provider.until(1)
        queued = await a.hold(alice)
        admitted = asyncio.Event()
        second = asyncio.create_task(run(a, queued, alice, provider, admitted))
        async with asyncio.timeout(10):
            await admitted.wait()
        await a.scheduler.hand_over()
        with pytest.raises(JobHandedOverError):
            await second
        assert await b.scheduler.withdraw(queued) is Withdrawal.CALLER_REFUNDS
        assert await b.scheduler.withdraw(queued) is Withdrawal.NOT_QUEUED
        provider.release.set()
        await first
