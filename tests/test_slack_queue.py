"""Queue feedback on Slack, end to end: the real ``imagine-bot run`` in Socket Mode with one
provider slot (``MAX_CONCURRENT_JOBS=1``), against the fake Slack and a fake image API whose
``Stall`` answer holds the slot until the test releases it.

A waiting job's ephemeral note shows its place and an ETA with a Cancel button; a slash
command's note is then replaced (through its response_url, within Slack's five posts) by
"Generating…"; Cancel takes a queued job out, refunds it and keeps it from the provider;
only the requester or an admin may cancel.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.fakes.image_api import FakeImageAPI
from tests.fakes.process import BotProcess
from tests.fakes.slack import Envelope, FakeSlack, PostedMessage, ResponsePost, Upload

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ADMIN = "UADMIN"
DAILY_IMAGES = 4
CANCELLED = "Cancelled. Nothing was charged."
QUEUED = re.compile(r"^Queued: (you're next|\d+ ahead of you)(, about \d+ (s|min))?\.$")
RESPONSE_URL_POSTS = 5


@dataclass
class World:
    slack: FakeSlack
    api: FakeImageAPI
    bot: BotProcess

    def slot_taken(self) -> AbstractContextManager[None]:
        """The next provider call stalls (holding the only slot) until the block ends."""
        return self.api.stalling()

    async def stalled(self) -> None:
        await self.api.wait_stalled()

    async def queued_note(self, envelope: Envelope) -> ResponsePost:
        return await self.slack.wait_for(
            lambda: next(
                (r for r in self.slack.responses_to(envelope) if r.text.startswith("Queued")),
                None,
            )
        )

    async def uploaded(self, prompt: str) -> Upload:
        [upload] = await self.slack.wait_for(
            lambda: [u for u in self.slack.uploads_in("C1") if prompt in (u.initial_comment or "")]
        )
        return upload

    async def quota(self, user: str) -> str:
        envelope = await self.slack.slash_command("quota", user=user, channel="C1")
        [answer] = await self.slack.wait_for(lambda: self.slack.responses_to(envelope))
        return answer.text

    def click_responses(self, envelope: Envelope) -> list[ResponsePost]:
        return self.slack.responses_to(envelope)

    def prompts_sent(self) -> list[str]:
        return [str(call.json.get("prompt")) for call in self.api.generations]


def _cancel_button(buttons: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    [button] = buttons
    assert button["action_id"] == "imagine_cancel"
    assert button["text"]["text"] == "Cancel"
    return button


@asynccontextmanager
async def running_world(workdir: Path) -> AsyncIterator[World]:
    """A bot process of its own, connected and warmed up, with its fakes."""
    async with FakeSlack() as slack, FakeImageAPI() as api:
        slack.add_user(ADMIN, "ada")
        slack.add_user("USTRANGER", "mallory")
        env = {
            **slack.env(),
            **api.env(),
            "IMAGE_API_MAX_RETRIES": "0",
            "DEFAULT_IMAGES_PER_DAY": str(DAILY_IMAGES),
            "SLACK_ADMIN_USER_IDS": ADMIN,
            "MAX_CONCURRENT_JOBS": "1",
        }
        bot = BotProcess(env, workdir=workdir)
        async with bot:
            slack.watch(bot)
            await slack.wait_connected()
            # One finished job, so the scheduler knows the provider's latency (the ETA).
            await slack.slash_command("warm up", user="UWARM", channel="C1")
            await slack.wait_for(lambda: slack.uploads_in("C1"))
            yield World(slack, api, bot)
            await slack.wait_all_acked()
        assert "Traceback" not in bot.log(), bot.log()[-6000:]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """One bot for the module's tests: none of them may stop it."""
    async with running_world(tmp_path_factory.mktemp("slack-queue")) as world:
        yield world
        assert world.bot.running, "a test stopped the shared bot: give it a process of its own"


@pytest_asyncio.fixture(loop_scope="module")
async def own_world(tmp_path: Path) -> AsyncIterator[World]:
    """A bot for one test alone: for a test that stops it."""
    async with running_world(tmp_path) as world:
        yield world


async def test_a_queued_note_shows_its_place_then_generating_and_the_images_arrive(
    world: World,
) -> None:
    slack = world.slack
    with world.slot_taken():
        running = await slack.slash_command("the slow one", user="U1", channel="C1")
        await world.stalled()
        waiting = await slack.slash_command("next in line", user="U2", channel="C1")

        note = await world.queued_note(waiting)
        assert note.ephemeral and QUEUED.match(note.text), note.text
        assert note.text.startswith("Queued: you're next, about ")
        button = _cancel_button(note.buttons())
        assert button["value"]
        # The running job's note says it is being drawn, with nothing to cancel.
        [generating] = await slack.wait_for(lambda: slack.responses_to(running))
        assert generating.text.startswith("Generating 1 image") and not generating.buttons()

    upload = await world.uploaded("next in line")
    assert button["value"][:12] in upload.filename  # the job the button would have cancelled
    posts = slack.responses_to(waiting)
    # The note was replaced (not added to) once the job ran: no Cancel button any more.
    replaced = [p for p in posts if p.body.get("replace_original") is True]
    assert [p.text for p in replaced][-1].startswith("Generating 1 image")
    assert not replaced[-1].buttons()
    assert len(posts) <= RESPONSE_URL_POSTS
    assert all(p.ephemeral for p in posts)


async def test_cancel_takes_a_queued_job_out_refunds_it_and_never_sends_it(
    world: World,
) -> None:
    slack = world.slack
    with world.slot_taken():
        await slack.slash_command("keeps the slot", user="U3", channel="C1")
        await world.stalled()
        doomed = await slack.slash_command("never drawn", user="U4", channel="C1")
        note = await world.queued_note(doomed)

        click = await slack.click_note(_cancel_button(note.buttons()), channel="C1", user="U4")
        await slack.wait_ack(click)
        # The clicked note itself now says so.
        [answer] = await slack.wait_for(lambda: world.click_responses(click))
        assert answer.text == CANCELLED and answer.body.get("replace_original") is True
        assert answer.ephemeral and not answer.buttons()
        assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in await world.quota("U4")

    await world.uploaded("keeps the slot")
    assert "never drawn" not in world.prompts_sent()
    # Said once, by the click: the job's own outcome did not repeat it.
    assert sum(CANCELLED in text for text in slack.ephemeral_to("U4")) == 1
    assert [r.text for r in slack.responses_to(doomed)].count(CANCELLED) == 0


async def test_only_the_requester_or_an_admin_may_cancel(world: World) -> None:
    slack = world.slack
    with world.slot_taken():
        await slack.slash_command("busy", user="U5", channel="C1")
        await world.stalled()
        queued = await slack.slash_command("not yours to cancel", user="U6", channel="C1")
        button = _cancel_button((await world.queued_note(queued)).buttons())

        forged = await slack.click_note(button, channel="C1", user="USTRANGER")
        [refusal] = await slack.wait_for(lambda: world.click_responses(forged))
        assert refusal.ephemeral and "Only the person who asked" in refusal.text
        assert refusal.body.get("replace_original") is False
        # Checked on the server side: Slack was asked whether the stranger is an admin.
        assert any(c.args.get("user") == "USTRANGER" for c in slack.calls("users.info"))

        by_admin = await slack.click_note(button, channel="C1", user=ADMIN)
        [done] = await slack.wait_for(lambda: world.click_responses(by_admin))
        assert done.text == CANCELLED

    await world.uploaded("busy")
    assert "not yours to cancel" not in world.prompts_sent()
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in await world.quota("U6")


async def test_a_mentions_note_offers_cancel_and_is_not_updated(world: World) -> None:
    slack = world.slack

    def notes_to(user: str) -> list[PostedMessage]:
        return [m for m in slack.messages if m.user == user]

    with world.slot_taken():
        await slack.slash_command("in the way", user="U7", channel="C1")
        await world.stalled()
        mention = await slack.mention("a quiet harbour", user="U8", channel="C1")
        [note] = await slack.wait_for(lambda: notes_to("U8"))
        assert note.method == "chat.postEphemeral" and QUEUED.match(note.text), note.text
        button = _cancel_button(note.buttons())

    thread = mention.payload["event"]["ts"]
    [upload] = await slack.wait_for(lambda: slack.uploads_in("C1", thread_ts=thread))
    assert button["value"][:12] in upload.filename
    # chat.postEphemeral notes cannot be edited: that one note was all.
    assert len(notes_to("U8")) == 1

    # A click on the stale note now says the job is no longer waiting.
    late = await slack.click_note(button, channel="C1", user="U8")
    [answer] = await slack.wait_for(lambda: world.click_responses(late))
    assert "no longer waiting" in answer.text
    assert f"{DAILY_IMAGES - 1} image" in await world.quota("U8")


async def test_on_shutdown_a_queued_job_still_runs_within_the_grace(own_world: World) -> None:
    # It stops the bot, so the bot is its own. Draining, not refusing: the jobs it accepted,
    # the queued one too, are finished before it exits.
    world = own_world
    slack = world.slack
    with world.slot_taken():
        await slack.slash_command("finished in the grace period", user="U9", channel="C1")
        await world.stalled()
        queued = await slack.slash_command("drained from the queue", user="U10", channel="C1")
        await world.queued_note(queued)
        stopping = asyncio.create_task(world.bot.stop())
    await world.uploaded("finished in the grace period")
    await world.uploaded("drained from the queue")
    assert await stopping == 0
    assert not [r for r in slack.responses_to(queued) if "restarting" in r.text]
