"""``ByteBudget``: leases wait for bytes in order, holders first, never deadlock, and one
larger than the whole budget is granted alone."""

from __future__ import annotations

import asyncio

from bot.provider.budget import ByteBudget, Lease


async def _run_ready() -> None:
    """One turn of the event loop: tasks just created run until they wait (deterministic;
    nothing here waits on time)."""
    await asyncio.sleep(0)


async def test_a_lease_that_fits_is_granted_at_once_and_released() -> None:
    budget = ByteBudget(100)
    lease = budget.lease()

    await lease.grow(60)
    assert (budget.used, lease.held) == (60, 60)
    lease.shrink_to(10)
    assert budget.used == 10
    lease.release()
    assert (budget.used, lease.held) == (0, 0)


async def test_a_lease_waits_until_others_release() -> None:
    budget = ByteBudget(100)
    first, second = budget.lease(), budget.lease()
    await first.grow(70)

    waiting = asyncio.create_task(second.grow(50))
    await _run_ready()
    assert not waiting.done() and budget.waiting == 1
    first.release()
    await waiting

    assert (budget.used, second.held) == (50, 50)


async def test_more_than_the_whole_budget_waits_until_it_is_alone() -> None:
    budget = ByteBudget(100)
    small, big, later = budget.lease(), budget.lease(), budget.lease()
    await small.grow(40)

    waiting = asyncio.create_task(big.grow(150))
    behind = asyncio.create_task(later.grow(10))  # would fit, but waits its turn
    await _run_ready()
    assert not waiting.done() and not behind.done() and budget.waiting == 2
    small.release()
    await waiting

    assert (budget.used, big.held) == (150, 150) and not behind.done()
    big.release()
    await behind
    assert budget.used == 10


async def test_a_lease_already_holding_bytes_goes_first() -> None:
    # A half-read answer finishes before a new one starts: its memory is freed sooner.
    budget = ByteBudget(100)
    reading, newcomer, blocker = budget.lease(), budget.lease(), budget.lease()
    await reading.grow(30)
    await blocker.grow(60)
    order: list[str] = []

    async def grow(lease_name: str, lease: Lease, amount: int) -> None:
        await lease.grow(amount)
        order.append(lease_name)

    new = asyncio.create_task(grow("newcomer", newcomer, 30))
    more = asyncio.create_task(grow("reading", reading, 30))
    await _run_ready()
    blocker.release()
    await asyncio.gather(new, more)

    assert order == ["reading", "newcomer"]


async def test_holders_all_waiting_for_more_do_not_deadlock() -> None:
    # Two answers hold 40 each and both need 30 more: neither can ever release first, so
    # one is let through (overdrawing the budget) and the other follows once it is done.
    budget = ByteBudget(100)
    a, b = budget.lease(), budget.lease()
    await a.grow(40)
    await b.grow(40)

    more_a = asyncio.create_task(a.grow(30))
    more_b = asyncio.create_task(b.grow(30))
    done, _ = await asyncio.wait(
        [more_a, more_b], timeout=10, return_when=asyncio.FIRST_COMPLETED
    )  # the timeout only bounds a failure: without the rule this never returns
    assert done == {more_a} and budget.used == 110
    a.release()
    await asyncio.wait_for(more_b, 10)

    assert (budget.used, b.held) == (70, 70)


async def test_a_cancelled_wait_takes_nothing_and_lets_the_next_one_in() -> None:
    budget = ByteBudget(100)
    holder, big, small = budget.lease(), budget.lease(), budget.lease()
    await holder.grow(50)
    waiting_big = asyncio.create_task(big.grow(80))
    waiting_small = asyncio.create_task(small.grow(40))
    await _run_ready()
    assert budget.waiting == 2  # the small one waits behind the big one, in order

    waiting_big.cancel()
    await asyncio.gather(waiting_big, return_exceptions=True)
    await waiting_small

    assert (big.held, small.held, budget.used) == (0, 40, 90)
