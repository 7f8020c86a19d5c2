"""Discord sharding: one process running every shard Discord recommends, two processes each
running its own shard on one database, the shard settings' mistakes, and pacing IDENTIFYs.

The fake Discord routes a server's events to the sessions of its shard only
(``(guild_id >> 22) % shard_count``), as Discord does; which process answered is read from its
log, where the job's prompt is written at DEBUG.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.cli import main
from adapters.discord.config import DiscordSettings
from adapters.discord.identify import IdentifyPacer
from bot.errors import ConfigError
from tests.fakes.discord import FakeDiscord, FakeInteraction
from tests.fakes.image_api import FakeImageAPI
from tests.fakes.process import BotProcess


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _health(port: int) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/healthz"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


def _answered(discord: FakeDiscord, interactions: list[FakeInteraction]) -> None:
    for interaction in interactions:
        assert interaction.acked and len(interaction.callbacks) == 1, interaction.callbacks


# -- one process, automatic sharding ------------------------------------------------------


@pytest.mark.e2e
async def test_one_process_runs_every_shard_discord_recommends_and_is_ready_with_all(
    tmp_path: Path,
) -> None:
    port = _free_port()
    async with FakeDiscord() as discord, FakeImageAPI() as api:
        discord.recommended_shards = 2
        discord.max_concurrency = 2  # both may identify at once: no 5 s wait
        on_0, on_1 = discord.add_guild(shard=(0, 2)), discord.add_guild(shard=(1, 2))
        discord.hold_ready(1)
        env = {**discord.env(), **api.env(), "HTTP_PORT": str(port)}
        async with BotProcess(env, workdir=tmp_path) as bot:
            discord.watch(bot)
            await discord.wait_connected()  # shard 0
            await discord.wait_for(lambda: [i for i in discord.identifies if i["shard"] == [1, 2]])
            # Shard 1 has identified but is not READY: its servers would get no answer.
            status, body = await _health(port)
            assert (status, body["adapters"]) == (503, {"discord": "starting"}), bot.log()

            discord.release_ready(1)
            await discord.wait_connected(connections=2)
            asked = [
                await discord.slash(
                    "imagine", {"prompt": f"in {g.name}"}, member=discord.member(), guild=g
                )
                for g in (on_0, on_1)
            ]
            answers = [await discord.wait_response(i) for i in asked]
            status, body = await _health(port)
            assert (status, body["adapters"]) == (200, {"discord": "connected"}), bot.log()
        log = bot.log()

    assert sorted(i["shard"] for i in discord.identifies) == [[0, 2], [1, 2]]
    created: dict[tuple[int, int], set[str]] = {}
    for shard, guild_id in discord.guild_creates:
        created.setdefault(shard, set()).add(guild_id)
    assert on_0.id in created[(0, 2)] and on_1.id not in created[(0, 2)]
    assert on_1.id in created[(1, 2)] and on_0.id not in created[(1, 2)]
    assert all(a.attachments for a in answers), [a.content for a in answers]
    _answered(discord, asked)
    assert sorted(str(c.json["prompt"]) for c in api.generations) == sorted(
        f"in {g.name}" for g in (on_0, on_1)
    )
    assert "recommends 2 shard(s)" in log and "Traceback" not in log, log[-6000:]


# -- two processes, a shard each ----------------------------------------------------------

PER_GUILD = 3


@pytest.mark.e2e
async def test_two_processes_each_answer_their_own_shards_servers_once(tmp_path: Path) -> None:
    async with FakeDiscord() as discord, FakeImageAPI() as api:
        guilds = {n: discord.add_guild(f"server of shard {n}", shard=(n, 2)) for n in (0, 1)}
        env = {
            **discord.env(),
            **api.env(),
            "DISCORD_SHARD_COUNT": "2",
            "DEFAULT_IMAGES_PER_DAY": "100",
        }
        # One database for both, as the rolling restart has it.
        bots = {
            n: BotProcess({**env, "DISCORD_SHARD_IDS": str(n)}, workdir=tmp_path / "db")
            for n in (0, 1)
        }
        try:
            for bot in bots.values():
                await bot.start()
                discord.watch(bot)
            await discord.wait_connected(connections=2)
            await discord.wait_for(lambda: sorted(discord.shards) == [(0, 2), (1, 2)])
            asked: dict[int, list[FakeInteraction]] = {0: [], 1: []}
            for i in range(PER_GUILD):
                for n, guild in guilds.items():
                    interaction = await discord.slash(
                        "imagine",
                        {"prompt": f"shard {n} #{i}"},
                        member=discord.member(),
                        guild=guild,
                    )
                    asked[n].append(interaction)
            answers = [await discord.wait_response(i) for n in asked for i in asked[n]]
        finally:
            for bot in bots.values():
                await bot.stop()

    logs = {n: bot.log() for n, bot in bots.items()}
    for n, log in logs.items():
        assert "Traceback" not in log, log[-6000:]
        assert f"running Discord shard(s) {n} of 2" in log, log[-3000:]
    assert sorted(i["shard"] for i in discord.identifies) == [[0, 2], [1, 2]]
    assert all(a.attachments for a in answers), [a.content for a in answers]
    _answered(discord, [i for n in asked for i in asked[n]])
    prompts = [str(c.json["prompt"]) for c in api.generations]
    assert sorted(prompts) == sorted(f"shard {n} #{i}" for n in (0, 1) for i in range(PER_GUILD))
    for prompt in prompts:  # drawn by the process of its server's shard, and only there
        owner = int(prompt.split()[1])
        assert repr(prompt) in logs[owner], prompt
        assert repr(prompt) not in logs[1 - owner], prompt


# -- mistakes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"DISCORD_SHARD_COUNT": "0"}, "DISCORD_SHARD_COUNT: '0' is not a number of shards"),
        ({"DISCORD_SHARD_COUNT": "two"}, "DISCORD_SHARD_COUNT: 'two' is not a number of shards"),
        ({"DISCORD_SHARD_IDS": "0,1"}, "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT"),
        (
            {"DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "2,x"},
            "DISCORD_SHARD_IDS: 'x' is not a shard id",
        ),
        (
            {"DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "-1"},
            "DISCORD_SHARD_IDS: '-1' is not a shard id",
        ),
        (
            {"DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "1,3,1"},
            "DISCORD_SHARD_IDS: shard 1 is listed twice",
        ),
        (
            {"DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "3,4"},
            "DISCORD_SHARD_IDS: shard 4 does not exist with DISCORD_SHARD_COUNT=4 "
            "(shard ids go from 0 to 3)",
        ),
    ],
)
def test_a_shard_setting_mistake_stops_run_with_one_line_naming_the_variable(
    env: dict[str, str],
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", "a-token")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'imagine.db'}")
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert main(["run"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"imagine-bot: {line}") and err.count("\n") == 1, err
    assert "a-token" not in err


def test_the_shard_settings_read_as_the_readme_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DiscordSettings().own_shards is None  # Discord's recommendation, all here
    monkeypatch.setenv("DISCORD_SHARD_COUNT", "4")
    assert DiscordSettings().own_shards == [0, 1, 2, 3]
    monkeypatch.setenv("DISCORD_SHARD_IDS", " 2, 3 ")
    settings = DiscordSettings()
    assert (settings.shard_count, settings.shard_ids) == (4, (2, 3))
    monkeypatch.setenv("DISCORD_SHARD_COUNT", " ")
    with pytest.raises(ConfigError, match="DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT"):
        DiscordSettings()


@pytest.mark.e2e
async def test_too_few_shards_for_discord_stop_the_bot_with_one_line(tmp_path: Path) -> None:
    async with FakeDiscord() as discord:
        discord.required_shards = 2  # more servers than one shard may hold
        env = {**discord.env(), "DISCORD_SHARD_COUNT": "1"}
        async with BotProcess(env, workdir=tmp_path) as bot:
            assert bot.process is not None
            code = await bot.process.wait()
        log = bot.log()

    assert code == 1, log[-3000:]
    assert discord.identifies[-1]["shard"] == [0, 1]
    assert (
        "imagine-bot: Discord requires more than 1 shard(s) for this bot's servers (sharding "
        "required): raise DISCORD_SHARD_COUNT"
    ) in log
    assert "Traceback" not in log, log[-6000:]


# -- pacing IDENTIFYs -----------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_identifies_wait_five_seconds_only_within_a_concurrency_bucket() -> None:
    clock = _Clock()
    pacer = IdentifyPacer(2, clock=clock, sleep=clock.sleep)
    for shard_id in (0, 1):  # buckets 0 and 1: at once
        await pacer.wait(shard_id)
    assert clock.slept == []
    await pacer.wait(2)  # bucket 0 again: 5 s after shard 0
    assert clock.slept == [5.0]
    clock.now += 7
    await pacer.wait(0)  # its bucket's last start is long past
    assert clock.slept == [5.0]


async def test_one_identify_per_five_seconds_without_concurrency() -> None:
    clock = _Clock()
    pacer = IdentifyPacer(1, clock=clock, sleep=clock.sleep)
    await pacer.wait(0)
    clock.now += 2
    await pacer.wait(1)
    await pacer.wait(2)
    assert clock.slept == [3.0, 5.0]


@pytest.mark.e2e
@pytest.mark.parametrize("shard", [[2, 2], [-1, 2], [0, 0], "0,1"])
async def test_the_fake_closes_a_session_with_a_bad_shard_as_discord_does(shard: object) -> None:
    # What the bot's own settings can never send: held to Discord's rule all the same.
    async with FakeDiscord() as discord, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(discord.gateway_url)
        assert (await ws.receive_json())["op"] == 10  # HELLO
        identify = {"token": discord.token, "intents": 1, "properties": {}, "shard": shard}
        await ws.send_json({"op": 2, "d": identify})
        closed = await ws.receive()
        assert (closed.type, ws.close_code) == (aiohttp.WSMsgType.CLOSE, 4010), closed
        await ws.close()
    assert discord.ready_sent == 0
