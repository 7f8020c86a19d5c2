"""The ledger contract: every ``Ledger`` implementation must pass these tests.

They use only the ``Ledger`` protocol (plus a settable clock), and run once per kind in
``LEDGER_KINDS``: today SQLite in memory and SQLite on a file.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.errors import JobNotFoundError, QuotaExceededError
from bot.limit import LimitName
from bot.models import JobState, Limits, Scope, ScopeKind
from bot.store.ledger import Ledger
from tests.fakes.clock import FakeClock
from tests.ledger_support import LEDGER_KINDS, open_ledger, request, requester

MakeLedger = Callable[..., Awaitable[Ledger]]


@pytest.fixture(params=LEDGER_KINDS)
async def make_ledger(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[MakeLedger]:
    opened: list[Ledger] = []

    async def make(defaults: Limits | None = None) -> Ledger:
        ledger = await open_ledger(request.param, tmp_path, defaults=defaults, clock=clock)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        await ledger.close()


def user_scope(user: str, workspace: str = "G1") -> Scope:
    return Scope(ScopeKind.USER, "discord", workspace, user)


def role_scope(role: str, workspace: str = "G1") -> Scope:
    return Scope(ScopeKind.ROLE, "discord", workspace, role)


def workspace_scope(workspace: str = "G1") -> Scope:
    return Scope(ScopeKind.WORKSPACE, "discord", workspace)


async def used(ledger: Ledger, name: str, **who: object) -> int | None:
    usage = (await ledger.allowance(requester(**who))).get(name)  # type: ignore[arg-type]
    return None if usage is None else usage.used


# --- holds, charges, refunds ---------------------------------------------------------------


async def test_a_held_job_keeps_everything_needed_to_repeat_it(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    ledger = await make_ledger()
    who = requester("alice", roles=("R1", "R2"))
    hold = await ledger.hold(requester=who, request=request(3), cost_micros=6_000, event_id="e1")
    assert not hold.duplicate
    assert re.fullmatch("[0-9a-f]{32}", hold.job_id), hold.job_id

    record = await ledger.job(hold.job_id)
    assert record.requester == who
    assert record.request == request(3)
    assert record.state is JobState.HELD
    assert (record.held_images, record.held_micros) == (3, 6_000)
    assert (record.charged_images, record.charged_micros) == (0, 0)
    assert record.created_at == clock.utc()
    assert record.finished_at is None
    assert record.event_id == "e1"


async def test_charge_records_only_the_images_delivered(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    ledger = await make_ledger(Limits(images_per_day=10, usd_micros_per_month=1_000_000))
    hold = await ledger.hold(requester=requester(), request=request(3), cost_micros=6_000)
    assert await used(ledger, "images_per_day") == 3
    assert await used(ledger, "usd_micros_per_month") == 6_000

    clock.advance(seconds=7)
    await ledger.charge(hold.job_id, images=2, cost_micros=4_000)

    record = await ledger.job(hold.job_id)
    assert record.state is JobState.CHARGED
    assert (record.charged_images, record.charged_micros) == (2, 4_000)
    assert record.finished_at == clock.utc()
    # The undelivered image and its price are released at once.
    assert await used(ledger, "images_per_day") == 2
    assert await used(ledger, "usd_micros_per_month") == 4_000


async def test_refund_releases_the_whole_hold(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger(Limits(images_per_day=2))
    hold = await ledger.hold(requester=requester(), request=request(2), cost_micros=4_000)
    with pytest.raises(QuotaExceededError):
        await ledger.hold(requester=requester(), request=request(1), cost_micros=2_000)

    await ledger.refund(hold.job_id, reason="content_rejected")

    record = await ledger.job(hold.job_id)
    assert record.state is JobState.REFUNDED
    assert record.refund_reason == "content_rejected"
    assert (record.charged_images, record.charged_micros) == (0, 0)
    again = await ledger.hold(requester=requester(), request=request(2), cost_micros=4_000)
    assert again.job_id != hold.job_id


async def test_charging_more_than_was_held_is_refused_and_the_job_stays_held(
    make_ledger: MakeLedger,
) -> None:
    ledger = await make_ledger(Limits(images_per_day=10))
    hold = await ledger.hold(requester=requester(), request=request(2), cost_micros=4_000)

    with pytest.raises(ValueError, match="only 2 / 4000 were held"):
        await ledger.charge(hold.job_id, images=3, cost_micros=4_000)
    with pytest.raises(ValueError):
        await ledger.charge(hold.job_id, images=2, cost_micros=4_001)
    with pytest.raises(ValueError):
        await ledger.charge(hold.job_id, images=-1, cost_micros=0)

    assert (await ledger.job(hold.job_id)).state is JobState.HELD
    assert await used(ledger, "images_per_day") == 2


async def test_a_job_is_settled_once_and_later_settlements_are_ignored(
    make_ledger: MakeLedger,
) -> None:
    ledger = await make_ledger(Limits(images_per_day=10))
    charged = await ledger.hold(requester=requester(), request=request(2), cost_micros=4_000)
    await ledger.charge(charged.job_id, images=1, cost_micros=2_000)
    await ledger.charge(charged.job_id, images=2, cost_micros=4_000)
    await ledger.refund(charged.job_id, reason="late")
    record = await ledger.job(charged.job_id)
    assert record.state is JobState.CHARGED
    assert (record.charged_images, record.charged_micros) == (1, 2_000)
    assert record.refund_reason is None

    refunded = await ledger.hold(requester=requester(), request=request(3), cost_micros=6_000)
    await ledger.refund(refunded.job_id, reason="timeout")
    await ledger.refund(refunded.job_id, reason="again")
    await ledger.charge(refunded.job_id, images=3, cost_micros=6_000)
    record = await ledger.job(refunded.job_id)
    assert record.state is JobState.REFUNDED
    assert record.refund_reason == "timeout"
    assert record.charged_images == 0

    # Only the one delivered image counts; nothing was counted twice.
    assert await used(ledger, "images_per_day") == 1


async def test_unknown_jobs_are_reported(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    with pytest.raises(JobNotFoundError):
        await ledger.job("0" * 32)
    with pytest.raises(JobNotFoundError):
        await ledger.charge("0" * 32, images=1, cost_micros=0)
    with pytest.raises(JobNotFoundError):
        await ledger.refund("0" * 32, reason="x")


# --- limits and refusals -------------------------------------------------------------------


async def test_a_refused_hold_names_the_limit_usage_and_reset_and_reserves_nothing(
    make_ledger: MakeLedger,
) -> None:
    ledger = await make_ledger(Limits(images_per_day=5))
    await ledger.hold(requester=requester(), request=request(4), cost_micros=0)

    with pytest.raises(QuotaExceededError) as refused:
        await ledger.hold(requester=requester(), request=request(2), cost_micros=0)

    err = refused.value
    assert (err.limit, err.allowed, err.used, err.requested) == ("images_per_day", 5, 4, 2)
    assert err.scope == "user"
    assert err.resets_at == datetime(2026, 6, 17, tzinfo=UTC)
    assert await used(ledger, "images_per_day") == 4
    # A request that fits is still accepted.
    await ledger.hold(requester=requester(), request=request(1), cost_micros=0)


@pytest.mark.parametrize(
    ("limits", "n", "cost", "name", "allowed", "resets_at"),
    [
        (Limits(images_per_day=3), 4, 0, "images_per_day", 3, datetime(2026, 6, 17, tzinfo=UTC)),
        (Limits(images_per_month=3), 4, 0, "images_per_month", 3, datetime(2026, 7, 1, tzinfo=UTC)),
        (
            Limits(usd_micros_per_month=10_000),
            1,
            10_001,
            "usd_micros_per_month",
            10_000,
            datetime(2026, 7, 1, tzinfo=UTC),
        ),
    ],
)
async def test_each_limit_refuses_with_its_own_window(
    make_ledger: MakeLedger,
    limits: Limits,
    n: int,
    cost: int,
    name: str,
    allowed: int,
    resets_at: datetime,
) -> None:
    ledger = await make_ledger(limits)
    with pytest.raises(QuotaExceededError) as refused:
        await ledger.hold(requester=requester(), request=request(n), cost_micros=cost)
    assert refused.value.limit == name
    assert refused.value.allowed == allowed
    assert refused.value.used == 0
    assert refused.value.resets_at == resets_at


async def test_the_first_broken_limit_is_reported(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger(Limits(images_per_day=1, images_per_month=1, usd_micros_per_month=1))
    with pytest.raises(QuotaExceededError) as refused:
        await ledger.hold(requester=requester(), request=request(2), cost_micros=5)
    assert refused.value.limit == "images_per_day"


async def test_free_preview_jobs_still_count_images(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger(Limits(images_per_day=3, usd_micros_per_month=0))
    for _ in range(3):
        await ledger.hold(requester=requester(), request=request(1), cost_micros=0)
    with pytest.raises(QuotaExceededError) as refused:
        await ledger.hold(requester=requester(), request=request(1), cost_micros=0)
    assert refused.value.limit == "images_per_day"
    # A $0 limit blocks anything that costs money.
    with pytest.raises(QuotaExceededError) as refused:
        await ledger.hold(requester=requester("bob"), request=request(1), cost_micros=1)
    assert refused.value.limit == "usd_micros_per_month"


async def test_money_limits_never_stop_free_jobs(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger(Limits(usd_micros_per_month=5_000))
    await ledger.hold(requester=requester(), request=request(1), cost_micros=4_000)
    # An admin lowers the limits below what is already spent: paid jobs stop, free ones don't.
    await ledger.set_limits(user_scope("alice"), Limits(usd_micros_per_month=1_000), actor="t")
    await ledger.set_spend_cap(platform="discord", workspace_id="G1", usd_micros=1_000, actor="t")
    with pytest.raises(QuotaExceededError) as refused:
        await ledger.hold(requester=requester(), request=request(1), cost_micros=1)
    assert (refused.value.used, refused.value.allowed) == (4_000, 1_000)
    await ledger.hold(requester=requester(), request=request(1), cost_micros=0)
    await ledger.hold(requester=requester("bob"), request=request(1), cost_micros=0)
    with pytest.raises(QuotaExceededError) as refused:
        await ledger.hold(requester=requester("bob"), request=request(1), cost_micros=1)
    assert refused.value.limit == "server_usd_micros_per_month"


async def test_a_zero_limit_blocks_every_image(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    await ledger.set_limits(user_scope("alice"), Limits(images_per_day=0), actor="test")
    with pytest.raises(QuotaExceededError):
        await ledger.hold(requester=requester(), request=request(1), cost_micros=0)
    await ledger.hold(requester=requester("bob"), request=request(1), cost_micros=0)


async def test_changing_some_limits_keeps_the_others_even_when_two_admins_race(
    make_ledger: MakeLedger,
) -> None:
    ledger = await make_ledger()
    scope = user_scope("alice")
    await ledger.set_limits(scope, Limits(images_per_day=5, images_per_month=50), actor="t")
    day = ledger.change_limits(scope, {LimitName.IMAGES_PER_DAY: 7}, actor="a1")
    money = ledger.change_limits(scope, {LimitName.USD_MICROS_PER_MONTH: 2_000_000}, actor="a2")
    await asyncio.gather(day, money)
    expected = Limits(images_per_day=7, images_per_month=50, usd_micros_per_month=2_000_000)
    assert await ledger.limits(scope) == expected
    # None unsets one limit; the answer is what is set now.
    now = await ledger.change_limits(scope, {LimitName.IMAGES_PER_MONTH: None}, actor="t")
    assert now == await ledger.limits(scope) == replace(expected, images_per_month=None)
    # A scope with nothing set yet gets just the named limit.
    fresh = await ledger.change_limits(user_scope("bob"), {LimitName.IMAGES_PER_DAY: 2}, actor="t")
    assert fresh == Limits(images_per_day=2)
    with pytest.raises(ValueError):
        await ledger.change_limits(scope, {LimitName.IMAGES_PER_DAY: -1}, actor="t")
    with pytest.raises(ValueError):
        await ledger.change_limits(scope, {LimitName.SERVER_USD_MICROS_PER_MONTH: 1}, actor="t")


async def test_nothing_set_means_unlimited(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    for _ in range(3):
        await ledger.hold(requester=requester(), request=request(4), cost_micros=10**9)
    assert (await ledger.allowance(requester())).limits == ()


async def test_bad_amounts_are_rejected(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    with pytest.raises(ValueError):
        await ledger.hold(requester=requester(), request=request(1), cost_micros=-1)
    with pytest.raises(ValueError):
        await ledger.set_limits(user_scope("alice"), Limits(images_per_day=-1), actor="t")
    with pytest.raises(ValueError):
        await ledger.set_spend_cap(platform="discord", workspace_id="G1", usd_micros=-5, actor="t")


# --- calendar windows ----------------------------------------------------------------------


async def test_the_daily_limit_resets_at_utc_midnight(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    ledger = await make_ledger(Limits(images_per_day=2, images_per_month=3))
    clock.set(datetime(2026, 6, 16, 23, 59, tzinfo=UTC))
    await ledger.hold(requester=requester(), request=request(2), cost_micros=0)
    with pytest.raises(QuotaExceededError) as refused:
        await ledger.hold(requester=requester(), request=request(1), cost_micros=0)
    assert refused.value.resets_at == datetime(2026, 6, 17, tzinfo=UTC)

    clock.advance(minutes=1)
    allowance = await ledger.allowance(requester())
    day = allowance.get("images_per_day")
    month = allowance.get("images_per_month")
    assert day is not None and (day.used, day.remaining) == (0, 2)
    assert day.resets_at == datetime(2026, 6, 18, tzinfo=UTC)
    assert month is not None and month.used == 2
    await ledger.hold(requester=requester(), request=request(1), cost_micros=0)
    # The month still remembers yesterday's images.
    with pytest.raises(QuotaExceededError) as refused:
        await ledger.hold(requester=requester(), request=request(1), cost_micros=0)
    assert refused.value.limit == "images_per_month"
    assert refused.value.resets_at == datetime(2026, 7, 1, tzinfo=UTC)


async def test_monthly_limits_reset_on_the_first_including_new_year(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    ledger = await make_ledger(Limits(usd_micros_per_month=10_000))
    clock.set(datetime(2026, 12, 31, 23, 0, tzinfo=UTC))
    await ledger.hold(requester=requester(), request=request(1), cost_micros=10_000)
    with pytest.raises(QuotaExceededError) as refused:
        await ledger.hold(requester=requester(), request=request(1), cost_micros=1)
    assert refused.value.resets_at == datetime(2027, 1, 1, tzinfo=UTC)

    clock.set(datetime(2027, 1, 1, tzinfo=UTC))
    await ledger.hold(requester=requester(), request=request(1), cost_micros=10_000)


async def test_usage_counts_in_the_window_where_the_job_was_held(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    ledger = await make_ledger(Limits(images_per_day=4))
    clock.set(datetime(2026, 6, 16, 23, 59, 50, tzinfo=UTC))
    late = await ledger.hold(requester=requester(), request=request(3), cost_micros=0)
    clock.advance(seconds=20)
    # Settled after midnight: the job belongs to the day it was accepted.
    await ledger.charge(late.job_id, images=2, cost_micros=0)
    assert await used(ledger, "images_per_day") == 0
    clock.advance(days=-1)
    assert await used(ledger, "images_per_day") == 2


# --- precedence ----------------------------------------------------------------------------


async def test_precedence_user_then_most_generous_role_then_workspace_then_global(
    make_ledger: MakeLedger,
) -> None:
    ledger = await make_ledger(Limits(images_per_day=1, images_per_month=100))

    async def day_limit(**who: object) -> int | None:
        usage = (await ledger.allowance(requester(**who))).get("images_per_day")  # type: ignore[arg-type]
        return None if usage is None else usage.allowed

    assert await day_limit() == 1  # global
    await ledger.set_limits(workspace_scope(), Limits(images_per_day=5), actor="t")
    assert await day_limit() == 5  # workspace default beats global
    assert await day_limit(workspace="G2") == 1  # ... only in its workspace
    await ledger.set_limits(role_scope("R1"), Limits(images_per_day=3), actor="t")
    await ledger.set_limits(role_scope("R2"), Limits(images_per_day=8), actor="t")
    assert await day_limit(roles=("R1",)) == 3  # a role beats the workspace, even if lower
    assert await day_limit(roles=("R1", "R2")) == 8  # the most generous role
    assert await day_limit(roles=("R9",)) == 5  # roles without limits do nothing
    await ledger.set_limits(user_scope("alice"), Limits(images_per_day=2), actor="t")
    assert await day_limit(roles=("R1", "R2")) == 2  # the user override beats every role
    assert await day_limit(user="bob", roles=("R2",)) == 8
    await ledger.clear_limits(user_scope("alice"), actor="t")
    assert await day_limit(roles=("R1", "R2")) == 8


async def test_limits_fall_through_field_by_field(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger(
        Limits(images_per_day=1, images_per_month=10, usd_micros_per_month=100)
    )
    await ledger.set_limits(workspace_scope(), Limits(images_per_month=50), actor="t")
    await ledger.set_limits(role_scope("R1"), Limits(usd_micros_per_month=900), actor="t")
    await ledger.set_limits(role_scope("R2"), Limits(images_per_month=20), actor="t")
    await ledger.set_limits(user_scope("alice"), Limits(images_per_day=7), actor="t")

    allowance = await ledger.allowance(requester(roles=("R1", "R2")))
    assert {u.name: u.allowed for u in allowance.limits} == {
        "images_per_day": 7,  # user
        "images_per_month": 20,  # role R2 (R1 does not set it)
        "usd_micros_per_month": 900,  # role R1
    }
    allowance = await ledger.allowance(requester("bob"))
    assert {u.name: u.allowed for u in allowance.limits} == {
        "images_per_day": 1,  # global
        "images_per_month": 50,  # workspace
        "usd_micros_per_month": 100,  # global
    }


async def test_limits_of_other_platforms_and_workspaces_do_not_apply(
    make_ledger: MakeLedger,
) -> None:
    ledger = await make_ledger()
    await ledger.set_limits(
        Scope(ScopeKind.USER, "slack", "G1", "alice"), Limits(images_per_day=0), actor="t"
    )
    await ledger.set_limits(user_scope("alice", "G2"), Limits(images_per_day=0), actor="t")
    await ledger.set_limits(role_scope("R1", "G2"), Limits(images_per_day=0), actor="t")
    who = requester(roles=("R1",))
    assert (await ledger.allowance(who)).limits == ()  # none of the three is alice's in G1
    hold = await ledger.hold(requester=who, request=request(1), cost_micros=0)
    assert (await ledger.job(hold.job_id)).state is JobState.HELD


async def test_limits_at_a_scope_read_back_and_global_is_the_defaults(
    make_ledger: MakeLedger,
) -> None:
    defaults = Limits(images_per_day=10)
    ledger = await make_ledger(defaults)
    assert await ledger.limits(Scope(ScopeKind.GLOBAL)) == defaults
    assert await ledger.limits(user_scope("alice")) == Limits()
    await ledger.set_limits(user_scope("alice"), Limits(images_per_month=4), actor="t")
    assert await ledger.limits(user_scope("alice")) == Limits(images_per_month=4)
    # set replaces the whole scope; an empty Limits clears it.
    await ledger.set_limits(user_scope("alice"), Limits(images_per_day=2), actor="t")
    assert await ledger.limits(user_scope("alice")) == Limits(images_per_day=2)
    await ledger.set_limits(user_scope("alice"), Limits(), actor="t")
    assert await ledger.limits(user_scope("alice")) == Limits()
    with pytest.raises(ValueError, match="environment"):
        await ledger.set_limits(Scope(ScopeKind.GLOBAL), Limits(images_per_day=1), actor="t")
    with pytest.raises(ValueError):
        await ledger.set_limits(Scope(ScopeKind.USER, "discord", "G1"), Limits(), actor="t")


# --- the workspace spend cap ---------------------------------------------------------------


async def test_the_server_cap_is_shared_by_every_user_of_the_workspace(
    make_ledger: MakeLedger,
) -> None:
    ledger = await make_ledger(Limits(usd_micros_per_month=1_000_000))
    await ledger.set_spend_cap(platform="discord", workspace_id="G1", usd_micros=10_000, actor="t")
    assert await ledger.spend_cap(platform="discord", workspace_id="G1") == 10_000
    await ledger.hold(requester=requester("alice"), request=request(1), cost_micros=6_000)
    with pytest.raises(QuotaExceededError) as refused:
        await ledger.hold(requester=requester("bob"), request=request(1), cost_micros=6_000)
    err = refused.value
    assert (err.limit, err.scope) == ("server_usd_micros_per_month", "server")
    assert (err.allowed, err.used, err.requested) == (10_000, 6_000, 6_000)
    assert err.resets_at == datetime(2026, 7, 1, tzinfo=UTC)
    usage = (await ledger.allowance(requester("bob"))).get("server_usd_micros_per_month")
    assert usage is not None and usage.remaining == 4_000

    # Other workspaces are not affected; removing the cap lifts it.
    await ledger.hold(
        requester=requester("bob", workspace="G2"), request=request(1), cost_micros=6_000
    )
    await ledger.set_spend_cap(platform="discord", workspace_id="G1", usd_micros=None, actor="t")
    assert await ledger.spend_cap(platform="discord", workspace_id="G1") is None
    await ledger.hold(requester=requester("bob"), request=request(1), cost_micros=6_000)


# --- idempotency ---------------------------------------------------------------------------


async def test_a_redelivered_event_returns_the_first_job_and_reserves_nothing(
    make_ledger: MakeLedger,
) -> None:
    ledger = await make_ledger(Limits(images_per_day=10))
    first = await ledger.hold(
        requester=requester(), request=request(2), cost_micros=0, event_id="i-1"
    )
    again = await ledger.hold(
        requester=requester(), request=request(4), cost_micros=0, event_id="i-1"
    )
    assert again.job_id == first.job_id and again.duplicate
    assert await used(ledger, "images_per_day") == 2

    # Still a duplicate after the first job settled, and even when quota is used up.
    await ledger.refund(first.job_id, reason="x")
    await ledger.hold(requester=requester(), request=request(4), cost_micros=0, event_id="i-2")
    await ledger.hold(requester=requester(), request=request(4), cost_micros=0, event_id="i-3")
    late = await ledger.hold(
        requester=requester(), request=request(4), cost_micros=0, event_id="i-1"
    )
    assert late == again
    # Holds without an event id are never duplicates of each other.
    a = await ledger.hold(requester=requester("bob"), request=request(1), cost_micros=0)
    b = await ledger.hold(
        requester=requester("bob"), request=request(1), cost_micros=0, event_id=""
    )
    assert a.job_id != b.job_id and not b.duplicate


# --- stale holds ---------------------------------------------------------------------------


async def test_orphans_are_held_jobs_past_their_own_deadline_or_of_a_lapsed_lease(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    ledger = await make_ledger(Limits(images_per_day=10))
    old = await ledger.hold(requester=requester(), request=request(2), cost_micros=0)
    done = await ledger.hold(requester=requester(), request=request(1), cost_micros=0)
    await ledger.charge(done.job_id, images=1, cost_micros=0)
    clock.advance(minutes=10)
    young = await ledger.hold(requester=requester(), request=request(3), cost_micros=0)
    clock.advance(minutes=6)
    # This process is alive and says so; only the job past its 15-minute deadline is overdue.
    assert await ledger.renew_lease()
    assert await ledger.refund_orphans() == 1
    assert await ledger.refund_orphans() == 0
    assert (await ledger.job(old.job_id)).state is JobState.REFUNDED
    assert (await ledger.job(old.job_id)).refund_reason == "expired"
    assert (await ledger.job(done.job_id)).state is JobState.CHARGED
    assert (await ledger.job(young.job_id)).state is JobState.HELD
    assert await used(ledger, "images_per_day") == 4


# --- usage report --------------------------------------------------------------------------


async def test_usage_report_groups_charged_jobs_by_day_user_and_model(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    ledger = await make_ledger()

    async def job(
        who: str, n: int, micros: int, workspace: str = "G1", platform: str = "discord"
    ) -> None:
        hold = await ledger.hold(
            requester=requester(who, workspace=workspace, platform=platform),
            request=request(n),
            cost_micros=micros,
        )
        await ledger.charge(hold.job_id, images=n, cost_micros=micros)

    await job("alice", 2, 4_000)
    await job("alice", 1, 2_000)
    await job("bob", 1, 2_000)
    await job("carol", 1, 2_000, workspace="G2")
    await job("dave", 1, 2_000, platform="slack", workspace="T1")
    refunded = await ledger.hold(
        requester=requester("alice"), request=request(4), cost_micros=8_000
    )
    await ledger.refund(refunded.job_id, reason="x")
    await ledger.hold(requester=requester("alice"), request=request(4), cost_micros=8_000)  # held
    clock.advance(days=1)
    await job("alice", 1, 2_000)

    report = await ledger.usage(since=datetime(2026, 6, 1, tzinfo=UTC))
    assert [
        (r.day, r.platform, r.workspace_id, r.user_id, r.model, r.images, r.usd_micros)
        for r in report.rows
    ] == [
        ("2026-06-16", "discord", "G1", "alice", "stability/sdxl", 3, 6_000),
        ("2026-06-16", "discord", "G1", "bob", "stability/sdxl", 1, 2_000),
        ("2026-06-16", "discord", "G2", "carol", "stability/sdxl", 1, 2_000),
        ("2026-06-16", "slack", "T1", "dave", "stability/sdxl", 1, 2_000),
        ("2026-06-17", "discord", "G1", "alice", "stability/sdxl", 1, 2_000),
    ]
    assert (report.total_images, report.total_micros) == (7, 14_000)
    assert report.until == clock.utc()

    g1 = await ledger.usage(
        since=datetime(2026, 6, 1, tzinfo=UTC), platform="discord", workspace_id="G1"
    )
    assert (g1.total_images, g1.total_micros) == (5, 10_000)
    first_day = await ledger.usage(
        since=datetime(2026, 6, 16, tzinfo=UTC), until=datetime(2026, 6, 17, tzinfo=UTC)
    )
    assert first_day.total_images == 6
    assert (await ledger.usage(since=datetime(2026, 6, 18, tzinfo=UTC))).rows == ()


# --- audit ---------------------------------------------------------------------------------


async def test_every_admin_change_is_audited_with_who_when_scope_old_and_new(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    ledger = await make_ledger()
    await ledger.set_limits(user_scope("alice"), Limits(images_per_day=5), actor="discord:admin1")
    clock.advance(minutes=1)
    await ledger.set_limits(
        user_scope("alice"), Limits(images_per_day=9, images_per_month=50), actor="cli:root"
    )
    clock.advance(minutes=1)
    await ledger.clear_limits(user_scope("alice"), actor="discord:admin2")
    await ledger.clear_limits(user_scope("nobody"), actor="discord:admin2")  # nothing to clear
    await ledger.set_spend_cap(
        platform="discord", workspace_id="G1", usd_micros=5_000_000, actor="discord:admin1"
    )
    await ledger.set_spend_cap(
        platform="discord", workspace_id="G1", usd_micros=None, actor="discord:admin1"
    )
    await ledger.set_limits(workspace_scope("G2"), Limits(images_per_day=1), actor="x")

    entries = await ledger.audit_log(platform="discord", workspace_id="G1")
    assert [(e.action, e.actor) for e in entries] == [
        ("clear_spend_cap", "discord:admin1"),
        ("set_spend_cap", "discord:admin1"),
        ("clear_limits", "discord:admin2"),
        ("set_limits", "cli:root"),
        ("set_limits", "discord:admin1"),
    ]
    clear, second, first = entries[2], entries[3], entries[4]
    assert first.scope == user_scope("alice")
    assert first.at == datetime(2026, 6, 16, 9, 30, tzinfo=UTC)
    assert first.old is None
    assert first.new == {
        "images_per_day": 5,
        "images_per_month": None,
        "usd_micros_per_month": None,
    }
    assert second.old == first.new
    assert second.new == {"images_per_day": 9, "images_per_month": 50, "usd_micros_per_month": None}
    assert second.at == datetime(2026, 6, 16, 9, 31, tzinfo=UTC)
    assert clear.old == second.new
    assert clear.new == {
        "images_per_day": None,
        "images_per_month": None,
        "usd_micros_per_month": None,
    }
    assert entries[1].new == {"usd_micros_per_month": 5_000_000}
    assert entries[0].old == {"usd_micros_per_month": 5_000_000}
    assert entries[0].scope == workspace_scope("G1")
    assert len(await ledger.audit_log()) == 6
    assert len(await ledger.audit_log(limit=2)) == 2


# --- notices, clicks and operations ----------------------------------------------------------


async def test_an_interrupted_member_is_told_once_by_whichever_process_claims_it(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    ledger = await make_ledger()
    reach = {"channel": "C1", "token": "t-1"}
    told = await ledger.hold(requester=requester(), request=request(1), cost_micros=0, reach=reach)
    silent = await ledger.hold(requester=requester("bob"), request=request(1), cost_micros=0)
    assert not await ledger.refund_orphan(told.job_id)  # its process runs and is not overdue
    assert await ledger.claim_notices("discord") == []

    clock.advance(minutes=16)
    assert await ledger.refund_orphans() == 2
    assert await ledger.claim_notices("slack") == []
    (interrupted,) = await ledger.claim_notices("discord")
    assert interrupted.reach == reach
    assert interrupted.record.job_id == told.job_id
    assert interrupted.record.state is JobState.REFUNDED
    assert await ledger.claim_notices("discord") == []  # claimed: nobody tells them twice
    await ledger.notice_sent(told.job_id)
    assert await ledger.claim_notices("discord") == []
    assert (await ledger.job(silent.job_id)).state is JobState.REFUNDED


async def test_an_overdue_job_is_refunded_on_its_own(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    ledger = await make_ledger()
    hold = await ledger.hold(requester=requester(), request=request(1), cost_micros=0)
    clock.advance(minutes=16)
    assert await ledger.refund_orphan(hold.job_id)
    assert not await ledger.refund_orphan(hold.job_id)
    assert (await ledger.job(hold.job_id)).state is JobState.REFUNDED


async def test_a_repeated_click_within_the_window_is_not_a_first(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    ledger = await make_ledger()
    window = timedelta(seconds=2)
    assert await ledger.first_click("alice:reroll:j1", window=window)
    clock.advance(seconds=1)
    assert not await ledger.first_click("alice:reroll:j1", window=window)
    assert await ledger.first_click("bob:reroll:j1", window=window)
    clock.advance(seconds=3)
    assert await ledger.first_click("alice:reroll:j1", window=window)


async def test_operations_ping_count_and_copy_the_ledger(
    make_ledger: MakeLedger, clock: FakeClock, tmp_path: Path
) -> None:
    ledger = await make_ledger()
    assert ledger.now() == clock.utc()
    assert ledger.location
    await ledger.ping()
    stats = await ledger.job_stats()
    assert stats.by_state == {"held": 0, "charged": 0, "refunded": 0} and stats.charged == {}

    charged = await ledger.hold(requester=requester(), request=request(3), cost_micros=6_000)
    await ledger.charge(charged.job_id, images=2, cost_micros=4_000)
    refunded = await ledger.hold(requester=requester(), request=request(1), cost_micros=2_000)
    await ledger.refund(refunded.job_id, reason="failed")
    await ledger.hold(requester=requester(), request=request(1), cost_micros=2_000)
    stats = await ledger.job_stats()
    assert stats.by_state == {"held": 1, "charged": 1, "refunded": 1}
    assert stats.charged == {"stability/sdxl": (2, 4_000)}

    target = tmp_path / "copy" / "backup.db"
    target.parent.mkdir()
    await ledger.backup(target)
    assert target.stat().st_size > 0
    assert [p.name for p in target.parent.iterdir()] == ["backup.db"]  # nothing left over
