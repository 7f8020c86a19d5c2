"""Quota administration: the permission-checked core API (``QuotaAdmin``) the chat adapters
call, and the operator's ``imagine-bot quota|usage|db`` commands run with a real runtime."""

from __future__ import annotations

import argparse
import csv
import getpass
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from adapters.runtime import Runtime
from adapters.shell.admin import add_parsers
from bot.admin import QuotaAdmin, csv_name, scope_in, to_csv
from bot.catalog import load_catalog
from bot.config import Settings
from bot.errors import InvalidRequestError, PermissionDeniedError, QuotaExceededError
from bot.limit import LimitName
from bot.models import Limits, Requester, Scope, ScopeKind
from bot.moderation.admin import ModerationAdmin
from bot.moderation.screening import Moderation
from bot.provider.preview import PreviewProvider
from bot.service import ImageService
from bot.store.database import Store
from bot.store.ledger import Ledger, SqliteLedger
from bot.store.moderation import SqliteModerationStore
from tests.fakes.clock import FakeClock
from tests.ledger_support import STORE_KINDS, open_store_of, request, requester

ROOT = Path(__file__).resolve().parents[1]

ADMIN = Requester("discord", "G1", "C1", "admin1", is_admin=True)
MEMBER = Requester("discord", "G1", "C1", "alice", role_ids=("R1",))


@pytest.fixture(params=STORE_KINDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    """Each test runs on every store kind: the admin API and the operator's commands use
    only the store's protocols."""
    async with await open_store_of(
        request.param, tmp_path, defaults=Limits(images_per_day=10), clock=clock
    ) as store:
        yield store


@pytest.fixture
def ledger(store: Store) -> Ledger:
    return store.ledger


@pytest.fixture
def admin(ledger: Ledger, clock: FakeClock) -> QuotaAdmin:
    return QuotaAdmin(ledger, clock=clock.utc)


async def charged(ledger: Ledger, who: Requester, n: int, micros: int) -> None:
    hold = await ledger.hold(requester=who, request=request(n), cost_micros=micros)
    await ledger.charge(hold.job_id, images=n, cost_micros=micros)


# --- QuotaAdmin ----------------------------------------------------------------------------

Operation = Callable[[QuotaAdmin, Requester], Awaitable[object]]
OPERATIONS: dict[str, Operation] = {
    "quota": lambda a, who: a.quota(who, scope_in(who, user_id="alice")),
    "change_quota": lambda a, who: a.change_quota(
        who, scope_in(who), {LimitName.IMAGES_PER_DAY: 0}
    ),
    "clear_quota": lambda a, who: a.clear_quota(who, scope_in(who, role_id="R1")),
    "spend_cap": lambda a, who: a.spend_cap(who),
    "set_spend_cap": lambda a, who: a.set_spend_cap(who, 0),
    "allowance": lambda a, who: a.allowance(who, MEMBER),
    "usage_report": lambda a, who: a.usage_report(who, 7),
    "audit_log": lambda a, who: a.audit_log(who),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
async def test_members_who_are_not_admins_are_refused_everything(
    admin: QuotaAdmin, ledger: Ledger, operation: str
) -> None:
    with pytest.raises(PermissionDeniedError):
        await OPERATIONS[operation](admin, MEMBER)
    # Nothing changed: the member can still generate, and nothing was audited.
    await ledger.hold(requester=MEMBER, request=request(1), cost_micros=1_000)
    assert await ledger.audit_log() == ()


@pytest.mark.parametrize(
    "scope",
    [
        Scope(ScopeKind.USER, "discord", "G2", "alice"),  # another server
        Scope(ScopeKind.WORKSPACE, "slack", "G1"),  # another platform
        Scope(ScopeKind.GLOBAL),  # the environment's defaults
    ],
)
async def test_an_admin_acts_only_on_their_own_server(
    admin: QuotaAdmin, ledger: Ledger, scope: Scope
) -> None:
    with pytest.raises(PermissionDeniedError):
        await admin.change_quota(ADMIN, scope, {LimitName.IMAGES_PER_DAY: 0})
    with pytest.raises(PermissionDeniedError):
        await admin.clear_quota(ADMIN, scope)
    with pytest.raises(PermissionDeniedError):
        await admin.quota(ADMIN, scope)
    with pytest.raises(PermissionDeniedError):
        await admin.allowance(ADMIN, Requester("discord", "G2", "C", "bob"))
    assert await ledger.audit_log() == ()


@pytest.mark.parametrize(
    "limits",
    [
        Limits(images_per_day=10**30),
        Limits(images_per_month=1_000_001),
        Limits(usd_micros_per_month=2**70),
        Limits(usd_micros_per_month=1_000_000_000_001),
    ],
)
async def test_limits_the_database_cannot_store_are_refused_in_words(
    admin: QuotaAdmin, ledger: Ledger, limits: Limits
) -> None:
    with pytest.raises(InvalidRequestError, match="from 0 to 1,000,000"):
        changes = {LimitName(k): v for k, v in asdict(limits).items() if v is not None}
        await admin.change_quota(ADMIN, scope_in(ADMIN, user_id="alice"), changes)
    with pytest.raises(InvalidRequestError, match="from 0 to 1,000,000 with at most 6 decimals"):
        await admin.set_spend_cap(ADMIN, 10**400)
    assert await ledger.audit_log() == ()


async def test_an_admin_sets_and_clears_quotas_and_every_change_is_audited(
    admin: QuotaAdmin, ledger: Ledger, clock: FakeClock
) -> None:
    alice = scope_in(ADMIN, user_id="alice")
    assert await admin.change_quota(ADMIN, alice, {LimitName.IMAGES_PER_DAY: 1}) == Limits(
        images_per_day=1
    )
    assert await admin.quota(ADMIN, alice) == Limits(images_per_day=1)
    with pytest.raises(InvalidRequestError):
        await admin.change_quota(ADMIN, alice, {})  # nothing named
    await ledger.hold(requester=MEMBER, request=request(1), cost_micros=0)
    with pytest.raises(QuotaExceededError):
        await ledger.hold(requester=MEMBER, request=request(1), cost_micros=0)

    clock.advance(minutes=5)
    await admin.clear_quota(ADMIN, scope_in(ADMIN, user_id="alice"))
    await ledger.hold(requester=MEMBER, request=request(1), cost_micros=0)  # global 10/day again

    entries = await admin.audit_log(ADMIN)
    assert [(e.action, e.actor, e.at) for e in entries] == [
        ("clear_limits", "discord:admin1", clock.utc()),
        ("set_limits", "discord:admin1", clock.utc() - timedelta(minutes=5)),
    ]
    assert entries[1].scope == Scope(ScopeKind.USER, "discord", "G1", "alice")
    assert entries[0].old == {
        "images_per_day": 1,
        "images_per_month": None,
        "usd_micros_per_month": None,
    }


async def test_an_admin_caps_server_spend_and_reads_a_members_allowance(
    admin: QuotaAdmin, ledger: Ledger
) -> None:
    await admin.set_spend_cap(ADMIN, 5_000)
    assert await admin.spend_cap(ADMIN) == 5_000
    await charged(ledger, requester("bob"), 2, 4_000)
    with pytest.raises(QuotaExceededError) as refused:
        await ledger.hold(requester=MEMBER, request=request(1), cost_micros=2_000)
    assert refused.value.limit == "server_usd_micros_per_month"

    allowance = await admin.allowance(ADMIN, MEMBER)
    cap = allowance.get("server_usd_micros_per_month")
    day = allowance.get("images_per_day")
    assert cap is not None and (cap.used, cap.remaining) == (4_000, 1_000)
    assert day is not None and (day.used, day.allowed) == (0, 10)

    await admin.set_spend_cap(ADMIN, None)
    await ledger.hold(requester=MEMBER, request=request(1), cost_micros=2_000)
    assert [e.action for e in await admin.audit_log(ADMIN)] == ["clear_spend_cap", "set_spend_cap"]


async def test_usage_report_covers_the_admins_server_for_the_last_days(
    admin: QuotaAdmin, ledger: Ledger, clock: FakeClock
) -> None:
    clock.set(datetime(2026, 6, 10, 23, 0, tzinfo=UTC))
    await charged(ledger, requester("alice"), 1, 2_000)  # 7 days before the report: left out
    clock.set(datetime(2026, 6, 11, 0, 30, tzinfo=UTC))
    await charged(ledger, requester("alice"), 2, 4_000)
    clock.set(datetime(2026, 6, 17, 8, 0, tzinfo=UTC))
    await charged(ledger, requester("bob"), 1, 2_500)
    await charged(ledger, requester("carol", workspace="G2"), 3, 9_000)  # another server

    report = await admin.usage_report(ADMIN, days=7)
    assert report.since == datetime(2026, 6, 11, tzinfo=UTC)
    assert [(r.day, r.user_id, r.images, r.usd_micros) for r in report.rows] == [
        ("2026-06-11", "alice", 2, 4_000),
        ("2026-06-17", "bob", 1, 2_500),
    ]
    assert (report.total_images, report.total_micros) == (3, 6_500)

    assert to_csv(report) == (
        "day,platform,workspace_id,user_id,model,images,usd\n"
        "2026-06-11,discord,G1,alice,stability/sdxl,2,0.004000\n"
        "2026-06-17,discord,G1,bob,stability/sdxl,1,0.002500\n"
    )
    assert csv_name(report) == f"imagine-usage-20260611-{report.until:%Y%m%d}.csv"
    with pytest.raises(ValueError):
        await admin.usage_report(ADMIN, days=0)


def test_scopes_are_built_in_the_actors_own_server() -> None:
    assert scope_in(ADMIN) == Scope(ScopeKind.WORKSPACE, "discord", "G1")
    assert scope_in(ADMIN, role_id="R1") == Scope(ScopeKind.ROLE, "discord", "G1", "R1")
    assert scope_in(ADMIN, user_id="U") == Scope(ScopeKind.USER, "discord", "G1", "U")
    with pytest.raises(ValueError):
        scope_in(ADMIN, user_id="U", role_id="R1")


# --- the operator's CLI --------------------------------------------------------------------


def runtime_on(store: Store, http: httpx.AsyncClient, settings: Settings) -> Runtime:
    """A runtime around ``store`` with the offline provider, built as ``open_runtime`` would."""
    catalog = load_catalog()
    provider = PreviewProvider()
    ledger = store.ledger
    moderation = Moderation.open(store.moderation)
    return Runtime(
        settings=settings,
        catalog=catalog,
        http=http,
        ledger=ledger,
        provider=provider,
        service=ImageService(catalog=catalog, provider=provider, ledger=ledger),
        moderation=moderation,
        quota_admin=QuotaAdmin(ledger),
        moderation_admin=ModerationAdmin(moderation),
    )


@pytest.fixture
async def runtime(store: Store) -> AsyncIterator[Runtime]:
    async with httpx.AsyncClient() as http:
        yield runtime_on(store, http, Settings(database_url="sqlite://:memory:"))


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="imagine-bot")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


async def run_cli(
    runtime: Runtime, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    args = parse(*argv)
    code = await args.handler(args, runtime)
    out, err = capsys.readouterr()
    return code, out, err


async def cli(runtime: Runtime, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run a command that must succeed; its stdout."""
    code, out, err = await run_cli(runtime, capsys, *argv)
    assert (code, err) == (0, "")
    return out


async def cli_error(runtime: Runtime, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run a command that must fail with exit status 2 and one line on stderr; that line."""
    code, out, err = await run_cli(runtime, capsys, *argv)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("imagine-bot: ")
    return err


def lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def squeeze(text: str) -> list[str]:
    """The lines of ``text`` with runs of spaces (table padding) collapsed."""
    return [" ".join(line.split()) for line in text.splitlines()]


G1 = ("--platform", "discord", "--server", "G1")


async def test_quota_set_changes_only_the_limits_given(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    out = await cli(
        runtime, capsys, "quota", "set", *G1, "--user", "alice", "--images-per-day", "3"
    )
    assert lines(out)[:3] == [
        ["scope", "images/day", "images/month", "USD/month"],
        ["before", "-", "-", "-"],
        ["now", "3", "-", "-"],
    ]
    await cli(runtime, capsys, "quota", "set", *G1, "--user", "alice", "--usd-per-month", "$2.5")
    out = await cli(
        runtime,
        capsys,
        "quota",
        "set",
        *G1,
        "--user",
        "alice",
        "--images-per-day",
        "none",
        "--images-per-month",
        "40",
    )
    assert lines(out)[1:3] == [["before", "3", "-", "$2.50"], ["now", "-", "40", "$2.50"]]
    user = Scope(ScopeKind.USER, "discord", "G1", "alice")
    assert await runtime.ledger.limits(user) == Limits(
        images_per_month=40, usd_micros_per_month=2_500_000
    )
    entries = await runtime.ledger.audit_log()
    assert len(entries) == 3
    assert {e.actor for e in entries} == {f"cli:{getpass.getuser()}"}


async def test_quota_set_role_and_server_default_then_show_the_members_allowance(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    await cli(runtime, capsys, "quota", "set", *G1, "--images-per-month", "100")
    await cli(runtime, capsys, "quota", "set", *G1, "--role", "R1", "--images-per-day", "4")
    await cli(runtime, capsys, "quota", "cap", *G1, "50")
    await charged(runtime.ledger, MEMBER, 3, 6_000)

    out = await cli(runtime, capsys, "quota", "show", *G1, "--user", "alice", "--role", "R1")
    rows = lines(out)
    assert rows[0] == ["scope", "images/day", "images/month", "USD/month"]
    assert rows[1] == ["global", "(environment)", "10", "-", "-"]
    assert rows[2] == ["server", "default", "discord:G1", "-", "100", "-"]
    assert rows[3] == ["role", "R1", "in", "discord:G1", "4", "-", "-"]
    assert rows[4] == ["user", "alice", "in", "discord:G1", "-", "-", "-"]
    assert "server spend cap: $50.00 per month" in out
    allowance = squeeze(out)[squeeze(out).index("user alice now:") + 1 :]
    assert allowance == [
        "limit allowed used left resets",
        "daily image limit 4 3 1 2026-06-17 00:00 UTC (in 14h 30m)",
        "monthly image limit 100 3 97 2026-07-01 00:00 UTC (in 14d 14h)",
        "server's monthly spending cap $50.00 $0.006 $49.994 2026-07-01 00:00 UTC (in 14d 14h)",
    ]


async def test_quota_clear_and_cap_none(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    await cli(runtime, capsys, "quota", "set", *G1, "--user", "alice", "--images-per-day", "0")
    out = await cli(runtime, capsys, "quota", "clear", *G1, "--user", "alice")
    assert out == "cleared user alice in discord:G1; it inherits every limit now\n"
    out = await cli(runtime, capsys, "quota", "clear", *G1, "--user", "alice")
    assert out == "nothing was set for user alice in discord:G1\n"
    await runtime.ledger.hold(requester=MEMBER, request=request(1), cost_micros=0)

    await cli(runtime, capsys, "quota", "cap", *G1, "0.01")
    out = await cli(runtime, capsys, "quota", "cap", *G1, "none")
    assert out == "server spend cap for discord:G1: $0.01 -> none per month\n"
    out = await cli(runtime, capsys, "quota", "audit", *G1)
    actions = [" ".join(row[3 : 5 if row[4] == "limits" else 6]) for row in lines(out)[1:]]
    assert actions == ["clear spend cap", "set spend cap", "clear limits", "set limits"]


async def test_quota_mistakes_are_one_line_on_stderr(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    err = await cli_error(runtime, capsys, "quota", "set", *G1, "--user", "alice")
    assert "nothing to set" in err
    with pytest.raises(SystemExit):
        parse("quota", "set", *G1, "--images-per-day", "-3")
    with pytest.raises(SystemExit):
        parse("quota", "set", *G1, "--user", "a", "--role", "b", "--images-per-day", "1")
    with pytest.raises(SystemExit):
        parse("usage", "--since", "June")
    for flag, value in (("--usd-per-month", "1e400"), ("--images-per-day", "9" * 4000)):
        with pytest.raises(SystemExit):
            parse("quota", "set", *G1, flag, value)
        assert "from 0 to 1,000,000" in capsys.readouterr().err
    capsys.readouterr()


async def test_usage_prints_a_table_with_totals_and_writes_csv(
    runtime: Runtime, capsys: pytest.CaptureFixture[str], clock: FakeClock, tmp_path: Path
) -> None:
    clock.set(datetime(2026, 5, 31, 12, tzinfo=UTC))
    await charged(runtime.ledger, requester("alice"), 1, 2_000)  # last month
    clock.set(datetime(2026, 6, 16, 12, tzinfo=UTC))
    await charged(runtime.ledger, requester("alice"), 2, 4_000)
    await charged(runtime.ledger, requester("bob"), 1, 13_000)
    await charged(runtime.ledger, requester("dave", platform="slack", workspace="T1"), 1, 3_000)

    out = await cli(runtime, capsys, "usage")  # this month, everywhere
    assert lines(out) == [
        ["day", "platform", "server", "user", "model", "images", "USD"],
        ["2026-06-16", "discord", "G1", "alice", "stability/sdxl", "2", "$0.004"],
        ["2026-06-16", "discord", "G1", "bob", "stability/sdxl", "1", "$0.013"],
        ["2026-06-16", "slack", "T1", "dave", "stability/sdxl", "1", "$0.003"],
        ["total", "4", "$0.02"],
        ["(2026-06-01", "to", "2026-06-16", "12:00", "UTC)"],
    ]

    target = tmp_path / "usage.csv"
    out = await cli(runtime, capsys, "usage", *G1, "--since", "2026-05-01", "--csv", str(target))
    assert f"wrote 3 row(s) to {target}" in out
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [(r["day"], r["user_id"], r["images"], r["usd"]) for r in rows] == [
        ("2026-05-31", "alice", "1", "0.002000"),
        ("2026-06-16", "alice", "2", "0.004000"),
        ("2026-06-16", "bob", "1", "0.013000"),
    ]
    out = await cli(
        runtime, capsys, "usage", "--platform", "slack", "--until", "2026-06-16", "--csv", "-"
    )
    assert out == "day,platform,workspace_id,user_id,model,images,usd\n"


async def test_db_backup_writes_a_usable_copy_and_never_overwrites(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ledger = await SqliteLedger.open(tmp_path / "live.db")
    try:
        async with httpx.AsyncClient() as http:
            runtime = runtime_on(Store(ledger, SqliteModerationStore.on(ledger)), http, Settings())
            result = await runtime.service.generate(
                runtime.service.parse("a lighthouse --n 2"), MEMBER
            )
            target = tmp_path / "backup.db"
            out = await cli(runtime, capsys, "db", "backup", str(target))
            assert out.startswith(f"backed up {tmp_path / 'live.db'} to {target}")
            err = await cli_error(runtime, capsys, "db", "backup", str(target))
            assert "already exists" in err
    finally:
        await ledger.close()
    copy = await SqliteLedger.open(target)
    try:
        record = await copy.job(result.job_id)
        assert record.request.prompt == "a lighthouse"
        assert record.charged_images == 2
    finally:
        await copy.close()


@pytest.mark.e2e
def test_the_installed_command_line_sets_and_shows_quotas(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'imagine.db'}",
        "DEFAULT_IMAGES_PER_DAY": "25",
    }

    def imagine_bot(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "adapters.cli", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = imagine_bot("quota", "set", *G1, "--user", "alice", "--images-per-day", "7")
    assert done.returncode == 0, done.stderr
    done = imagine_bot("quota", "show", *G1, "--user", "alice")
    assert done.returncode == 0, done.stderr
    shown = squeeze(done.stdout)
    assert "global (environment) 25 - -" in shown
    assert "user alice in discord:G1 7 - -" in shown
    assert any(line.startswith("daily image limit 7 0 7 ") for line in shown)
    done = imagine_bot("quota", "clear", *G1)
    assert done.returncode == 0 and "nothing was set" in done.stdout
    done = imagine_bot("db", "backup", str(tmp_path / "no-such-dir" / "x.db"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"imagine-bot: {tmp_path / 'no-such-dir'} is not a directory"
    )
