"""Operations: ``/healthz`` and ``/metrics`` over real HTTP, the job id on every log line about
a job, the one HTTP server shared with Slack HTTP mode, and the Compose file's healthcheck."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import socket
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from adapters.ops import OpsServer
from adapters.runtime import Runtime, open_runtime
from bot.catalog import load_catalog
from bot.config import Settings, load_settings
from bot.errors import ConfigError, ContentRejectedError
from bot.health import CONNECTED, DISCONNECTED
from bot.logcontext import log_handler
from bot.models import QueueStatus, Requester
from bot.provider.metrics import InstrumentedProvider, Metrics
from bot.service import ImageService
from bot.store.ledger import SqliteLedger
from tests.fakes.discord import FakeDiscord
from tests.fakes.image_api import FakeImageAPI, Images, Stall, content_policy_violation
from tests.fakes.process import REPO_ROOT, BotProcess
from tests.fakes.provider import ScriptedProvider
from tests.fakes.slack import FakeSlack

ALICE = Requester(platform="slack", workspace_id="T1", channel_id="C1", user_id="alice")
BOB = Requester(platform="slack", workspace_id="T1", channel_id="C1", user_id="bob")
FLUX = "black-forest-labs/flux-1-schnell"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@dataclass
class Scrape:
    """``/metrics`` parsed with Prometheus' own parser: sample name + labels -> value."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    families: dict[str, str]  # name -> type

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))


def parse_metrics(text: str) -> Scrape:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    families: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(samples, families)


class Client:
    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}"

    async def health(self) -> tuple[int, dict[str, Any]]:
        async with self.session.get(self.base + "/healthz") as response:
            assert response.content_type == "application/json"
            return response.status, await response.json()

    async def metrics(self) -> Scrape:
        async with self.session.get(self.base + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return parse_metrics(await response.text())


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'imagine.db'}", **values)


@pytest.fixture
async def preview_runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    async with open_runtime(_settings(tmp_path), generates=False) as runtime:
        yield runtime


# --- /healthz ---------------------------------------------------------------------------


async def test_healthz_is_200_only_when_every_adapter_is_connected_and_the_database_answers(
    preview_runtime: Runtime, http: aiohttp.ClientSession
) -> None:
    runtime = preview_runtime
    runtime.health.expect("discord")
    runtime.health.expect("slack")
    async with OpsServer(runtime, port=0, host="127.0.0.1") as server:
        client = Client(http, server.port)

        status, body = await client.health()
        assert status == 503
        assert body == {
            "status": "down",
            "database": "ok",
            "adapters": {"discord": "starting", "slack": "starting"},
        }

        runtime.health.set("discord", CONNECTED)
        runtime.health.set("slack", CONNECTED)
        status, body = await client.health()
        assert status == 200
        assert body == {
            "status": "ok",
            "database": "ok",
            "adapters": {"discord": "connected", "slack": "connected"},
        }

        runtime.health.set("slack", DISCONNECTED)
        status, body = await client.health()
        assert status == 503
        assert body["adapters"] == {"discord": "connected", "slack": "disconnected"}

        runtime.health.set("slack", CONNECTED)
        await runtime.ledger.close()  # the database stops answering
        status, body = await client.health()
        assert status == 503
        assert body == {
            "status": "down",
            "database": "down",
            "adapters": {"discord": "connected", "slack": "connected"},
        }
        # /metrics still answers, saying the ledger did not.
        scrape = await client.metrics()
        assert scrape.get("imagine_database_up") == 0
        assert scrape.get("imagine_jobs", state="held") is None


async def test_a_probe_turns_a_silently_dropped_connection_into_503(
    preview_runtime: Runtime, http: aiohttp.ClientSession
) -> None:
    connected = True

    async def probe() -> bool:
        return connected

    preview_runtime.health.set("slack", CONNECTED)
    preview_runtime.health.probe("slack", probe)
    async with OpsServer(preview_runtime, port=0, host="127.0.0.1") as server:
        client = Client(http, server.port)
        assert (await client.health())[0] == 200
        connected = False
        status, body = await client.health()
    assert status == 503 and body["adapters"] == {"slack": "disconnected"}


async def test_unknown_paths_and_methods_are_refused(
    preview_runtime: Runtime, http: aiohttp.ClientSession
) -> None:
    async with OpsServer(preview_runtime, port=0, host="127.0.0.1") as server:
        base = f"http://127.0.0.1:{server.port}"
        async with http.get(base + "/nothing-here") as response:
            assert response.status == 404
        async with http.post(base + "/healthz") as response:
            assert response.status == 405


async def test_a_taken_port_is_a_config_error(preview_runtime: Runtime) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = OpsServer(preview_runtime, port=port, host="127.0.0.1")
        with pytest.raises(ConfigError, match=f"cannot listen on HTTP_HOST 127.0.0.1 port {port}"):
            await server.start()


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the IPv4 sockets listening on ``port``, read from the kernel."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.mark.parametrize(("http_host", "expected"), [(None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")])
async def test_the_ops_server_listens_on_loopback_unless_http_host_says_otherwise(
    tmp_path: Path, http: aiohttp.ClientSession, http_host: str | None, expected: str
) -> None:
    extra = {} if http_host is None else {"http_host": http_host}
    async with (
        open_runtime(_settings(tmp_path, **extra), generates=False) as runtime,
        OpsServer(runtime, port=0) as server,
    ):
        assert _listening_addresses(server.port) == {expected}
        assert (await Client(http, server.port).health())[0] == 200


# --- /metrics ---------------------------------------------------------------------------


@pytest.mark.e2e
async def test_metrics_show_jobs_queue_latency_and_charges(
    tmp_path: Path, image_api: FakeImageAPI, http: aiohttp.ClientSession
) -> None:
    settings = _settings(
        tmp_path,
        image_api_base_url=image_api.base_url,
        image_api_key=image_api.api_key,
        image_api_max_retries=0,
        max_concurrent_jobs=1,
    )
    async with (
        open_runtime(settings) as runtime,
        OpsServer(runtime, port=0, host="127.0.0.1") as server,
    ):
        client = Client(http, server.port)
        service = runtime.service
        image_api.script(Stall(then=Images()), Images(), content_policy_violation())

        first = asyncio.create_task(service.generate(service.parse("a red fox --n 2"), ALICE))
        await image_api.stalled.wait()
        queued = asyncio.Event()

        async def progress(status: QueueStatus) -> None:
            if not status.running:
                queued.set()

        second = asyncio.create_task(
            service.generate(service.parse("a lighthouse"), BOB, progress=progress)
        )
        await queued.wait()

        busy = await client.metrics()
        assert busy.families["imagine_provider_latency_seconds"] == "histogram"
        assert busy.get("imagine_jobs", state="held") == 2
        assert busy.get("imagine_jobs_running") == 1
        assert busy.get("imagine_queue_length") == 1
        assert busy.get("imagine_concurrency_limit") == 1

        image_api.release.set()
        await first
        await second
        with pytest.raises(ContentRejectedError):
            await service.generate(service.parse("something forbidden"), ALICE)

        done = await client.metrics()

    assert done.get("imagine_database_up") == 1
    assert done.get("imagine_jobs", state="held") == 0
    assert done.get("imagine_jobs", state="charged") == 2
    assert done.get("imagine_jobs", state="refunded") == 1
    assert done.get("imagine_jobs_running") == 0 and done.get("imagine_queue_length") == 0
    assert done.get("imagine_images_charged_total", model=FLUX) == 3
    assert done.get("imagine_charged_usd_total", model=FLUX) == pytest.approx(0.009)
    # Every provider call is timed, the failed one included.
    assert done.get("imagine_provider_latency_seconds_count", model=FLUX) == 3
    assert done.get("imagine_provider_latency_seconds_bucket", model=FLUX, le="+Inf") == 3
    latency_sum = done.get("imagine_provider_latency_seconds_sum", model=FLUX)
    assert latency_sum is not None and latency_sum > 0
    assert done.get("imagine_provider_errors_total", model=FLUX, error="ContentRejectedError") == 1
    estimate = done.get("imagine_provider_latency_estimate_seconds")
    assert estimate is not None and estimate > 0


# --- logs -------------------------------------------------------------------------------


@pytest.fixture
def captured_logs() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """Both formats at once, on the ``bot`` logger at DEBUG; yields (text, json)."""
    text, as_json = io.StringIO(), io.StringIO()
    handlers = [log_handler("text", text), log_handler("json", as_json)]
    logger = logging.getLogger("bot")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    for handler in handlers:
        logger.addHandler(handler)
    try:
        yield text, as_json
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.setLevel(level)


async def test_every_log_line_about_a_job_names_it(
    captured_logs: tuple[io.StringIO, io.StringIO],
) -> None:
    text, as_json = captured_logs
    ledger = await SqliteLedger.open(":memory:")
    try:
        provider = InstrumentedProvider(ScriptedProvider(), Metrics())
        service = ImageService(catalog=load_catalog(), provider=provider, ledger=ledger)
        logging.getLogger("bot.test").info("before any job")

        async def job(prompt: str) -> str:
            # Each platform event runs in a task of its own, as here.
            return (await service.generate(service.parse(prompt), ALICE)).job_id

        first = await asyncio.create_task(job("a secret garden"))
        second = await asyncio.create_task(job("a quiet harbour"))
    finally:
        await ledger.close()

    rendered = text.getvalue()
    for job_id in (first, second):
        about = [line for line in rendered.splitlines() if f"job {job_id}" in line]
        assert len(about) >= 3  # held, prompt (DEBUG), delivered
        assert all(f" job={job_id}: " in line for line in about), about
    assert re.search(r"bot\.test: before any job", rendered)

    entries = [json.loads(line) for line in as_json.getvalue().splitlines()]
    assert {e["job"] for e in entries if "job" in e} == {first, second}
    assert next(e for e in entries if e["message"] == "before any job").get("job") is None
    for job_id in (first, second):
        about = [e for e in entries if f"job {job_id}" in e["message"]]
        assert len(about) >= 3 and all(e.get("job") == job_id for e in about)
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry)
        if "secret garden" in entry["message"]:
            assert entry["level"] == "DEBUG"  # prompts only at DEBUG


# --- one server: Slack HTTP mode, Discord, and the process -------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.e2e
async def test_slack_http_mode_and_the_ops_endpoints_share_one_port(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = _free_port()
    client = Client(http, port)
    async with FakeSlack() as slack:
        env = {
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_BASE_URL": slack.base_url,
            "HTTP_PORT": str(port),
            "LOG_FORMAT": "json",
        }
        async with BotProcess(env, workdir=tmp_path) as bot:
            slack.watch(bot)
            # /slack/events is mounted (and Slack reported up) before the token check.
            await slack.wait_for(lambda: slack.calls("auth.test"))
            status, body = await client.health()
            assert (status, body) == (
                200,
                {"status": "ok", "database": "ok", "adapters": {"slack": "connected"}},
            ), bot.log()

            form = slack.slash_payload("a snowy cabin", user="U1", channel="C1")
            status, _, _ = await slack.post_signed(
                f"{client.base}/slack/events", secret=SECRET, form=form
            )
            assert status == 200
            await slack.wait_for(lambda: [u for u in slack.uploads_in("C1") if u.completed])

            scrape = await client.metrics()
            assert scrape.get("imagine_provider_latency_seconds_count", model=FLUX) == 1
            jobs = sum(scrape.get("imagine_jobs", state=s) or 0 for s in ("held", "charged"))
            assert jobs == 1
            assert await bot.stop() == 0
        log = bot.log()

    entries = [json.loads(line) for line in log.splitlines() if line.strip()]
    delivered = [e for e in entries if re.match(r"job \w+: delivered", e["message"])]
    assert len(delivered) == 1, log[-3000:]
    job_id = delivered[0]["job"]
    # Our lines; aiosqlite's DEBUG lines come from its worker thread, outside any task.
    ours = [e for e in entries if e["logger"].startswith(("bot.", "adapters."))]
    about = [e for e in ours if job_id in e["message"]]
    assert len(about) >= 3 and all(e.get("job") == job_id for e in about), about
    assert all(e["level"] == "DEBUG" for e in entries if "snowy cabin" in e["message"])


@pytest.mark.e2e
async def test_discord_alone_gets_the_ops_endpoints_too(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = _free_port()
    client = Client(http, port)
    async with FakeDiscord() as discord:
        env = {**discord.env(), "HTTP_PORT": str(port)}
        async with BotProcess(env, workdir=tmp_path) as bot:
            discord.watch(bot)
            await discord.wait_connected()
            member = discord.member()
            interaction = await discord.slash("imagine", {"prompt": "a lighthouse"}, member=member)
            await discord.wait_response(interaction)
            # The gateway session was up before the interaction was handled.
            status, body = await client.health()
            assert (status, body["adapters"]) == (200, {"discord": "connected"}), bot.log()
            scrape = await client.metrics()
            assert scrape.get("imagine_provider_latency_seconds_count", model=FLUX) == 1


# Python reprs: a dataclass's `Name(field=...)`, an enum's `<Kind.X: 'x'>`, `<... object at 0x>`.
REPR = re.compile(r"\b[A-Z]\w*\(\w+=|<\w+\.\w+: |<[\w.]+ object at 0x")


@pytest.mark.e2e
async def test_the_bot_s_own_log_lines_name_things_in_words(tmp_path: Path) -> None:
    async with FakeDiscord() as discord:
        async with BotProcess(discord.env(), workdir=tmp_path) as bot:
            discord.watch(bot)
            await discord.wait_connected()
            admin, member = discord.member(admin=True), discord.member()
            interaction = await discord.slash(
                "imagine-admin",
                {"user": member, "images_per_day": 3},
                subcommand="set-quota",
                member=admin,
            )
            await discord.wait_response(interaction)
            assert await bot.stop() == 0
        log = bot.log()

    ours = [line for line in log.splitlines() if re.search(r" (bot|adapters)\.[\w.]+: ", line)]
    assert [line for line in ours if REPR.search(line)] == []
    guild = discord.guild_id
    assert f"admin {admin.id} in server {guild}: /imagine-admin set-quota" in log
    assert f"set limits at user {member.id} in discord:{guild}: images/day 3," in log


# --- the image and Docker Compose -----------------------------------------------------------
# No Docker engine can run where the suite runs, so the files are checked for what the image
# must do, and the healthcheck's own command is run against a real /healthz.


@dataclass(frozen=True)
class Instruction:
    name: str
    args: str


def _dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, continuation lines joined, split by ``FROM``."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    stages: list[list[Instruction]] = []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, args = line.partition(" ")
        if name.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(Instruction(name.upper(), " ".join(args.split())))
    return stages


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _service(name: str = "imagine-bot") -> dict[str, Any]:
    service = _compose()["services"][name]
    assert isinstance(service, dict)
    return service


def test_compose_s_postgres_profile_runs_two_bots_on_one_healthy_postgres() -> None:
    services = _compose()["services"]
    # Plain `docker compose up` starts the SQLite bot alone; the profile adds the cluster.
    assert [n for n, s in services.items() if "profiles" not in s] == ["imagine-bot"]
    postgres, bots = _service("postgres"), _service("imagine-bot-pg")
    assert postgres["profiles"] == bots["profiles"] == ["postgres"]
    assert postgres["image"].startswith("postgres:15")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert postgres["volumes"] == ["imagine-postgres:/var/lib/postgresql/data"]
    assert bots["deploy"]["replicas"] == 2
    assert bots["depends_on"]["postgres"]["condition"] == "service_healthy"
    url = bots["environment"]["DATABASE_URL"]
    assert url.startswith("postgresql://") and url.endswith("@postgres:5432/imagine")
    assert "ports" not in bots  # two replicas cannot publish one host port
    readme = (REPO_ROOT / "README.md").read_text()
    assert "docker compose --profile postgres up" in readme


def test_the_image_installs_the_lock_before_the_code() -> None:
    """A code change must not reinstall every dependency: the locked install is its own layer,
    earlier than anything that copies code."""
    *_, image = _dockerfile_stages()
    names = [f"{i.name} {i.args}" for i in image]
    lock_copy = names.index("COPY requirements.lock ./")
    [install] = [k for k, n in enumerate(names) if "-r requirements.lock" in n]
    assert "--require-hashes" in names[install] and "--no-deps" in names[install]
    assert lock_copy < install
    code = [k for k, i in enumerate(image) if i.name in ("COPY", "ADD") and k != lock_copy]
    assert code and min(code) > install, names


def test_the_image_runs_unprivileged_with_its_own_healthcheck() -> None:
    *_, image = _dockerfile_stages()
    by_name: dict[str, list[str]] = {}
    for instruction in image:
        by_name.setdefault(instruction.name, []).append(instruction.args)

    assert by_name["USER"] == ["10001:10001"]
    assert by_name["EXPOSE"] == ["8080"]
    assert any("HTTP_PORT=8080" in env for env in by_name["ENV"])
    [check] = by_name["HEALTHCHECK"]
    assert check.endswith('CMD ["imagine-bot", "healthcheck"]')
    assert "--start-interval=" in check and "--start-period=" in check
    assert by_name["CMD"] == ['["imagine-bot", "run", "--wait-for-config"]']
    labels = " ".join(by_name["LABEL"])
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    # The numeric user owns the data directory the volume is mounted on.
    assert any("chown 10001:10001 /data" in run for run in by_name["RUN"])


def test_the_image_runs_a_python_the_suite_is_tested_on() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    [base] = re.findall(r"^ARG PYTHON_IMAGE=python:(3\.\d+)-slim$", dockerfile, re.MULTILINE)
    assert "FROM ${PYTHON_IMAGE}" in dockerfile
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert f"python{base}" in ci, f"the suite is not run on Python {base} in .ci/run"


def test_the_lock_pins_every_dependency_within_its_floor() -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pinned: dict[str, str] = {}
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        found = re.match(r"([A-Za-z0-9._-]+)==(\S+) \\$", line)
        if found:
            pinned[canonicalize_name(found[1])] = found[2]
    lock = (REPO_ROOT / "requirements.lock").read_text()
    hashed = re.findall(r"^\S+==\S+ \\\n    --hash=sha256:[0-9a-f]{64}", lock, re.MULTILINE)
    assert len(hashed) == len(pinned) > 0
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in requirements.lock"
        assert requirement.specifier.contains(pinned[name]), (name, pinned[name])


def test_compose_publishes_on_loopback_and_keeps_data_on_the_readme_s_volume() -> None:
    compose, service = _compose(), _service()

    assert service["build"] == "."
    assert service["env_file"] == ".env"
    assert service["ports"] == ["127.0.0.1:8080:8080"]
    assert service["environment"]["HTTP_PORT"] == "8080"
    assert service["environment"]["DATABASE_URL"] == "sqlite:////data/imagine.db"
    assert service["volumes"] == ["imagine-data:/data"]
    assert compose["volumes"]["imagine-data"]["name"] == "imagine-data"
    readme = (REPO_ROOT / "README.md").read_text()
    assert "-v imagine-data:/data" in readme


def test_compose_drops_privileges_rotates_logs_and_checks_health_quickly() -> None:
    service = _service()

    assert service["read_only"] is True and "/tmp" in service["tmpfs"]
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    logging_ = service["logging"]
    assert logging_["driver"] == "json-file"
    assert logging_["options"]["max-size"] and int(logging_["options"]["max-file"]) > 1
    check = service["healthcheck"]
    assert check["test"] == ["CMD", "imagine-bot", "healthcheck"]
    assert check["start_interval"] == "2s" and check["start_period"]
    assert service["restart"] == "unless-stopped"


def test_the_build_context_keeps_secrets_out_and_what_the_build_copies_in() -> None:
    ignored = {
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", "data", ".git"} <= ignored
    copied = {"pyproject.toml", "README.md", "LICENSE", "requirements.lock", "bot", "adapters"}
    assert not copied & ignored


async def _healthcheck(port: int | None) -> tuple[int, str, str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    if port is not None:
        env["HTTP_PORT"] = str(port)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.cli",
        "healthcheck",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.e2e
async def test_imagine_bot_healthcheck_follows_healthz(preview_runtime: Runtime) -> None:
    """The image's HEALTHCHECK command, run as Docker would: 0 on 200, 1 on 503, and one
    line (no traceback) when nothing listens or HTTP_PORT is unset."""
    preview_runtime.health.expect("slack")
    async with OpsServer(preview_runtime, port=0, host="127.0.0.1") as server:
        code, stdout, _ = await _healthcheck(server.port)
        assert code == 1 and stdout.startswith("503 ") and '"slack": "starting"' in stdout
        preview_runtime.health.set("slack", CONNECTED)
        code, stdout, _ = await _healthcheck(server.port)
        assert code == 0 and stdout.startswith("200 ") and '"status": "ok"' in stdout
        port = server.port

    code, stdout, stderr = await _healthcheck(port)
    assert (code, stdout) == (1, "")
    assert stderr == (
        f"imagine-bot: nothing answers at http://127.0.0.1:{port}/healthz (Connection refused); "
        "is imagine-bot run up, on this HTTP_PORT?\n"
    )
    code, _, stderr = await _healthcheck(None)
    assert code == 1 and stderr.startswith("imagine-bot: HTTP_PORT is not set")


def test_log_format_is_text_or_json_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().log_format == "text"
    monkeypatch.setenv("LOG_FORMAT", " JSON ")
    assert Settings().log_format == "json"
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        load_settings(env_file=None)
