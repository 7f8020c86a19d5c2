"""The benchmarks (``bench/``) still run: each one's core function with tiny parameters.

Not a benchmark: each test asserts that figures came out (and, for fairness, the one ordering
that holds by a wide margin at any speed), so that the scripts do not rot as the code they
measure changes. The numbers are in BENCHMARKS.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import ack, claim, cluster, fairness, memory, overhead, postgres_ledger, throughput
from tests.fakes.postgres import admin_url, database_url

pytestmark = pytest.mark.e2e


async def test_ack_measures_every_command_and_a_baseline(tmp_path: Path) -> None:
    for run in (
        await ack.discord_run(3, tmp_path / "discord", warm_up=1),
        await ack.slack_run(3, tmp_path / "slack", warm_up=1),
    ):
        assert len(run.acks) == 3 and len(run.baseline) == 3
        assert run.figures()["p99"] > 0
        assert "p99" in ack.report([run], 3)


async def test_overhead_times_each_path() -> None:
    result = await overhead.measure(jobs=1, latency=0.01, size="1024x1024", discord=False)
    assert set(result.times) >= {"raw HTTP", "provider", "service: delivered"}
    assert result.median("service: charged") > 0
    assert "raw HTTP" in overhead.report(result)


async def test_throughput_runs_jobs_through_the_scheduler_and_the_baseline() -> None:
    [(service, baseline)] = await throughput.measure(
        jobs=5, caps=[2], latency=0.01, baseline_jobs=2
    )
    assert (service.jobs, baseline.jobs) == (5, 2)
    assert service.wall_s > 0 and baseline.wall_s > 0
    assert "wall/ideal" in throughput.report([(service, baseline)])


async def test_fairness_measures_the_newcomer_under_round_robin_and_fifo() -> None:
    # 8 jobs of one user on 2 slots: FIFO puts the newcomer 4 rounds back, round-robin in the
    # first free slot. A round is 50 ms, so scheduling noise cannot bridge the 3-round gap.
    waits = await fairness.measure(cap=2, burst=8, latency=0.05)
    assert {(w.burst, w.order) for w in waits} == {
        ("1 user x 8", "round-robin"),
        ("1 user x 8", "FIFO"),
        ("10 users x 1", "round-robin"),
        ("10 users x 1", "FIFO"),
    }
    one_user = {w.order: w for w in waits if w.burst == "1 user x 8"}
    assert one_user["round-robin"].wait_units < one_user["FIFO"].wait_units, one_user
    assert "newcomer" in fairness.report(waits, cap=2, latency=0.01)


async def test_memory_reads_the_bot_process_rss_and_probes_its_loop() -> None:
    runs = (memory.Scenario("flat", 2, 1), memory.Scenario("max", 1, 2))
    base, measured = await memory.measure(runs, latency=0.01, side=1024)
    assert base.rss_mib > 0
    for run in measured:
        assert run.busy.hwm_mib >= run.idle.hwm_mib > 0
        assert run.probes and min(run.probes) > 0
    assert "peak" in memory.report(base, measured)
    client = await memory.client_run(memory.Scenario("max", 2, 2), latency=0.01, side=1024)
    assert client.peak_mib > 0 and client.lags
    assert "provider client" in memory.client_report([client])


async def test_postgres_ledger_runs_both_stores_and_the_processes(tmp_path: Path) -> None:
    results = await postgres_ledger.measure(
        database_url(str(tmp_path)), pairs=20, levels=(1, 10), processes=2, process_tasks=2
    )
    assert {(r.store, r.processes) for r in results} >= {
        ("PostgreSQL", 1),
        ("SQLite file", 1),
        ("in-memory counter", 1),
        ("PostgreSQL", 2),
        ("SQLite file", 2),
    }
    assert all(r.rate > 0 for r in results)
    assert "pairs/s" in postgres_ledger.report(results, server="PostgreSQL", users=20)


async def test_cluster_runs_jobs_over_processes_and_the_baseline(tmp_path: Path) -> None:
    runs = await cluster.measure(
        database_url(str(tmp_path)), jobs=8, cap=2, latency=0.01, processes=(1, 2)
    )
    assert [r.label for r in runs] == ["baseline", "1 process", "2 processes"]
    assert all(len(r.jobs) == 8 and 0 < r.peak <= 2 for r in runs)
    assert "wall/ideal" in cluster.report(runs, server="PostgreSQL", users=40, servers=4)


async def test_claim_times_claims_and_explains_the_claim() -> None:
    results = await claim.measure(admin_url(), depths=(5,), claims=3, users=4, servers=2)
    [depth] = results
    assert len(depth.seconds) == 3 and depth.median_ms > 0
    assert "ms" in depth.plan
    assert "p95 ms" in claim.report(results, server="PostgreSQL", users=4, servers=2)
