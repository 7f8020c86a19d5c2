"""Slack Socket Mode with several processes: each ``imagine-bot run`` opens its own
connection, Slack sends each envelope to one of the app's connections, and the process that
got it acknowledges and answers it, once. Which process drew a prompt is read from its log,
where the job's prompt is written at DEBUG.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.fakes.image_api import FakeImageAPI
from tests.fakes.process import BotProcess
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.e2e

COMMANDS = 6


async def test_two_processes_share_the_envelopes_and_answer_each_once(tmp_path: Path) -> None:
    async with FakeSlack() as slack, FakeImageAPI() as api:
        env = {**slack.env(), **api.env(), "DEFAULT_IMAGES_PER_DAY": "100"}
        bots: list[BotProcess] = []
        try:
            # One after the other, so that connection n is process n's.
            for n in (1, 2):
                bot = BotProcess(env, workdir=tmp_path / "db")  # one database for both
                bots.append(bot)
                await bot.start()
                slack.watch(bot)
                await slack.wait_for(lambda n=n: slack.open_connections == n)
            sent = [
                await slack.slash_command(f"harbour #{i}", user=f"U{i}", channel="C1")
                for i in range(COMMANDS)
            ]
            await slack.wait_all_acked()
            await slack.wait_for(
                lambda: len([u for u in slack.uploads_in("C1") if u.completed]) >= COMMANDS
            )
        finally:
            for bot in bots:
                await bot.stop()

    logs = {n: bot.log() for n, bot in zip((1, 2), bots, strict=True)}
    for log in logs.values():
        assert "Traceback" not in log, log[-6000:]
    assert slack.connections == 2  # one each, no reconnect
    # Each envelope went over one connection and was acked once, over that connection.
    for envelope in sent:
        acks = [a for a in slack.acks if a.envelope_id == envelope.envelope_id]
        assert [a.connection for a in acks] == [envelope.connection]
    assert {e.connection for e in sent} == {1, 2}  # both processes got work
    # Answered once: one image per command, each prompt drawn once, by the process that got it.
    comments = [u.initial_comment or "" for u in slack.uploads_in("C1") if u.completed]
    for i in range(COMMANDS):
        assert len([c for c in comments if f"harbour #{i}" in c]) == 1, comments
    prompts = [str(c.json["prompt"]) for c in api.generations]
    assert sorted(prompts) == sorted(f"harbour #{i}" for i in range(COMMANDS))
    for envelope, i in zip(sent, range(COMMANDS), strict=True):
        owner = envelope.connection
        assert repr(f"harbour #{i}") in logs[owner]
        assert repr(f"harbour #{i}") not in logs[3 - owner]


async def test_the_fake_refuses_an_eleventh_connection_as_slack_does() -> None:
    async with FakeSlack() as slack, aiohttp.ClientSession() as http:
        sockets = []
        for _ in range(10):
            ws = await http.ws_connect(f"{slack.url}/link/")
            hello = await ws.receive_json()
            assert hello["type"] == "hello"
            sockets.append(ws)
        assert hello["num_connections"] == 10
        extra = await http.ws_connect(f"{slack.url}/link/")
        refusal = await extra.receive_json()
        assert (refusal["type"], refusal["reason"]) == ("disconnect", "too_many_websockets")
        await slack.wait_for(lambda: slack.open_connections == 10)
        for ws in sockets:
            await ws.close()
        await extra.close()
