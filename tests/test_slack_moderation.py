"""Moderation end to end on Slack (Socket Mode): the real ``imagine-bot run`` against the fake
Slack and image API. Refusals with "Ask an admin", the review post with Approve / Deny in the
review channel, the approved job uploaded in the user's channel (charged to them), Deny, the
channel allow-list, and the ``/imagine admin`` moderation commands.

The workspace's rules are shared by the whole module, so each test undoes what it changes,
and asserts only on what it did itself (the tests run in random order).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.fakes.image_api import FakeImageAPI, content_policy_violation
from tests.fakes.process import BotProcess
from tests.fakes.slack import Envelope, FakeSlack, PostedMessage, ResponsePost

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ADMIN = "UADMIN"
MODS = "CMODS"
ART = "CART"
DAILY_IMAGES = 4


@dataclass
class World:
    slack: FakeSlack
    api: FakeImageAPI
    bot: BotProcess

    async def reply(self, text: str, *, user: str, channel: str = "C1") -> str:
        """The first thing the bot says back (ephemerally) to ``/imagine text``."""
        envelope = await self.slack.slash_command(text, user=user, channel=channel)
        [response] = await self.slack.wait_for(lambda: self.slack.responses_to(envelope)[:1])
        return response.text

    async def admin_says(self, text: str, *, user: str = ADMIN) -> str:
        return await self.reply(f"admin {text}", user=user)

    async def refused(self, prompt: str, *, user: str) -> tuple[Envelope, ResponsePost]:
        """``prompt`` is refused ephemerally, with the Ask an admin button."""
        before = len(self.api.generations)
        envelope = await self.slack.slash_command(prompt, user=user, channel="C1")
        response = await self.slack.wait_for(
            lambda: next((r for r in self.slack.responses_to(envelope) if r.buttons()), None)
        )
        assert response.ephemeral
        assert "refused by this server's rules" in response.text
        assert len(self.api.generations) == before
        return envelope, response

    async def ask(self, refusal: ResponsePost, *, user: str) -> tuple[Envelope, PostedMessage]:
        """Press Ask an admin; returns the click and the review post."""
        [button] = refusal.buttons()
        assert button["text"]["text"] == "Ask an admin"
        click = await self.slack.click_note(button, channel="C1", user=user)
        post = await self.slack.wait_for(lambda: self.review_post(str(button["value"])))
        return click, post

    def review_post(self, review_id: str) -> PostedMessage | None:
        for message in self.slack.posted(MODS):
            if any(b.get("value") == review_id for b in message.buttons()):
                return message
        return None

    def current(self, message: PostedMessage) -> PostedMessage:
        """``message`` as it is now (after ``chat.update``)."""
        return next(m for m in self.slack.posted(message.channel) if m.ts == message.ts)

    async def quota(self, user: str) -> str:
        return await self.reply("quota", user=user)


def _block_text(block: Mapping[str, Any]) -> str:
    parts = [str((block.get("text") or {}).get("text", ""))]
    parts += [str(e.get("text", "")) for e in block.get("elements", []) if isinstance(e, dict)]
    return "\n".join(parts)


def _text(message: PostedMessage) -> str:
    return "\n".join([message.text, *(_block_text(b) for b in message.blocks)])


def _button(message: PostedMessage, label: str) -> Mapping[str, Any]:
    return next(b for b in message.buttons() if b["text"]["text"] == label)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    workdir: Path = tmp_path_factory.mktemp("slack-moderation")
    async with FakeSlack(member_channels=("C1", MODS, ART)) as slack, FakeImageAPI() as api:
        slack.add_user(ADMIN, "ada")
        for user in ("U1", "U2", "U3", "U4", "U5", "U6", "U7", "U8", "U9", "U10"):
            slack.add_user(user)
        env = {
            **slack.env(),
            **api.env(),
            "IMAGE_API_MAX_RETRIES": "0",
            "DEFAULT_IMAGES_PER_DAY": str(DAILY_IMAGES),
            "SLACK_ADMIN_USER_IDS": ADMIN,
        }
        bot = BotProcess(env, workdir=workdir)
        async with bot:
            slack.watch(bot)
            try:
                await slack.wait_connected()
                world = World(slack, api, bot)
                said = await world.admin_says(f"review-channel <#{MODS}|mods>")
                assert f"<#{MODS}>" in said
                yield world
                assert bot.running, "a test stopped the shared bot: give it a process of its own"
                await slack.wait_all_acked()
            except BaseException:
                print(bot.log())
                raise
        assert "Traceback" not in bot.log(), bot.log()[-6000:]


# -- refusals -----------------------------------------------------------------------------


async def test_a_blocked_word_is_refused_ephemerally_without_cost_or_provider_call(
    world: World,
) -> None:
    _, refusal = await world.refused("a n.u.d.e portrait", user="U1")
    assert "nude" not in refusal.text  # the rule is never shown to the user
    uploads = world.slack.uploads_in("C1")
    assert not [u for u in uploads if "n.u.d.e" in f"{u.alt_txt} {u.initial_comment}"]
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in await world.quota("U1")


# -- Ask an admin, Approve, Deny ------------------------------------------------------------


async def test_ask_an_admin_then_an_admin_approves_and_the_user_is_charged(world: World) -> None:
    slack = world.slack
    _, refusal = await world.refused("a nude statue in a museum", user="U2")
    click, post = await world.ask(refusal, user="U2")

    # The refusal was replaced by "sent to the admins".
    [sent] = await slack.wait_for(lambda: slack.responses_to(click)[:1])
    assert "Sent to the admins" in sent.text and sent.body.get("replace_original") is True
    # The admins see the prompt, who asked where, and what matched.
    text = _text(post)
    assert "a nude statue in a museum" in text
    assert "<@U2>" in text and "<#C1>" in text and "builtin:nude" in text
    assert [b["text"]["text"] for b in post.buttons()] == ["Approve", "Deny"]

    # Someone who is not an admin is refused, and nothing runs.
    before = len(world.api.generations)
    await slack.click(_button(post, "Approve"), post, user="U3")
    await slack.wait_for(
        lambda: any("Only admins can approve or deny" in t for t in slack.ephemeral_to("U3"))
    )
    assert len(world.api.generations) == before
    assert world.current(post).buttons()

    # The admin approves: the images go to the user's channel, mentioning them.
    await slack.click(_button(post, "Approve"), post, user=ADMIN)
    [upload] = await slack.wait_for(
        lambda: [u for u in slack.uploads_in("C1") if "a nude statue" in (u.initial_comment or "")]
    )
    assert (upload.initial_comment or "").startswith("<@U2>")
    assert world.api.generations[-1].json["prompt"] == "a nude statue in a museum"
    await slack.wait_for(lambda: not world.current(post).buttons())
    assert f"Approved by <@{ADMIN}>" in _text(world.current(post))
    # Charged to the user who asked.
    assert f"{DAILY_IMAGES - 1} images left of {DAILY_IMAGES}" in await world.quota("U2")
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in await world.quota(ADMIN)


async def test_deny_tells_the_user_privately(world: World) -> None:
    slack = world.slack
    _, refusal = await world.refused("a porn parody poster", user="U4")
    _, post = await world.ask(refusal, user="U4")
    before = len(world.api.generations)

    await slack.click(_button(post, "Deny"), post, user=ADMIN)
    await slack.wait_for(lambda: any("did not approve it" in t for t in slack.ephemeral_to("U4")))
    [note] = [m for m in slack.messages if m.user == "U4" and "did not approve" in m.text]
    assert note.method == "chat.postEphemeral" and note.channel == "C1"
    assert "parody" not in note.text
    await slack.wait_for(lambda: not world.current(post).buttons())
    assert f"Denied by <@{ADMIN}>" in _text(world.current(post))
    assert len(world.api.generations) == before


async def test_an_approved_job_that_fails_is_refunded_and_both_are_told(world: World) -> None:
    slack = world.slack
    _, refusal = await world.refused("a nude marble torso", user="U9")
    _, post = await world.ask(refusal, user="U9")
    world.api.script(content_policy_violation())

    await slack.click(_button(post, "Approve"), post, user=ADMIN)
    # The user and the admin are each told privately; nothing is uploaded or charged.
    await slack.wait_for(lambda: any("content policy" in t for t in slack.ephemeral_to("U9")))
    await slack.wait_for(
        lambda: any(
            t.startswith("Approved, but the job did not run") and "content policy" in t
            for t in slack.ephemeral_to(ADMIN)
        )
    )
    assert not [u for u in slack.uploads_in("C1") if "torso" in (u.initial_comment or "")]
    assert not any("torso" in t for t in slack.ephemeral_to("U9"))
    assert f"Approved by <@{ADMIN}>" in _text(world.current(post))
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in await world.quota("U9")


async def test_a_review_the_admins_never_received_can_be_asked_for_again(world: World) -> None:
    slack = world.slack
    _, refusal = await world.refused("a nude figure study", user="U8")
    [button] = refusal.buttons()
    # Slack refuses the post in the review channel once.
    slack.fail(
        "chat.postMessage", status=200, error="channel_not_found", retry_after=None, channel=MODS
    )
    await slack.click_note(button, channel="C1", user="U8")
    await slack.wait_for(
        lambda: any(
            "couldn't post in the admins' review channel" in t for t in slack.ephemeral_to("U8")
        )
    )
    assert world.review_post(str(button["value"])) is None
    # Pressing again once the channel works sends it, instead of "already asked".
    await slack.click_note(button, channel="C1", user="U8")
    post = await slack.wait_for(lambda: world.review_post(str(button["value"])))
    assert "a nude figure study" in _text(post)


async def test_a_review_channel_the_bot_is_not_in_sends_nothing_until_it_is_invited(
    world: World,
) -> None:
    slack, locked = world.slack, "CLOCKED"
    _, refusal = await world.refused("a nude life class", user="U10")
    [button] = refusal.buttons()
    await world.admin_says(f"review-channel <#{locked}|locked>")
    try:
        await slack.click_note(button, channel="C1", user="U10")
        await slack.wait_for(
            lambda: any(
                "couldn't post in the admins' review channel" in t
                for t in slack.ephemeral_to("U10")
            )
        )
        assert slack.posted(locked) == []
        # Once the bot is invited, the same button sends it (the failed ask was withdrawn).
        slack.member_channels.add(locked)
        await slack.click_note(button, channel="C1", user="U10")
        [post] = await slack.wait_for(lambda: slack.posted(locked)[:1])
        assert "a nude life class" in _text(post)
    finally:
        slack.member_channels.discard(locked)
        await world.admin_says(f"review-channel <#{MODS}|mods>")


async def test_a_refused_mention_gets_the_button_in_an_ephemeral_message(world: World) -> None:
    slack = world.slack
    await slack.mention("a nude in a thread", user="U3", channel="C1")
    note = await slack.wait_for(
        lambda: next((m for m in slack.messages if m.user == "U3" and m.buttons()), None)
    )
    assert note.method == "chat.postEphemeral" and "refused" in note.text
    [ask] = note.buttons()
    await slack.click_note(ask, channel="C1", user="U3", message_ts=note.ts)
    post = await slack.wait_for(lambda: world.review_post(str(ask["value"])))
    assert "a nude in a thread" in _text(post) and "<@U3>" in _text(post)


# -- admin commands -------------------------------------------------------------------------


async def test_admins_block_list_and_unblock_words_and_patterns(world: World) -> None:
    assert "kumquat" in await world.admin_says("block add kumquat")
    assert "zep+elin" in await world.admin_says("block add /zep+elin/")
    listed = await world.admin_says("block list")
    assert "kumquat" in listed and "/zep+elin/" in listed

    await world.refused("a kumquat tree", user="U5")
    await world.refused("a zeppppelin at dawn", user="U5")

    assert "Unblocked" in await world.admin_says("block remove kumquat")
    assert "Unblocked" in await world.admin_says("block remove /zep+elin/")
    assert "kumquat" not in await world.admin_says("block list")
    await world.slack.slash_command("a kumquat tree", user="U5", channel="C1")
    await world.slack.wait_for(
        lambda: [u for u in world.slack.uploads_in("C1") if "kumquat" in (u.initial_comment or "")]
    )


async def test_a_user_cannot_use_the_moderation_commands(world: World) -> None:
    said = await world.admin_says("block add tangerine", user="U6")
    assert "Only admins can use admin commands" in said
    assert "tangerine" not in await world.admin_says("block list")


async def test_the_channel_allow_list_points_users_at_the_allowed_channel(world: World) -> None:
    assert f"<#{ART}>" in await world.admin_says(f"channels allow <#{ART}|art>")
    try:
        before = len(world.api.generations)
        text = await world.reply("a still life", user="U7")
        assert "isn't enabled in this channel" in text
        assert f"<#{ART}>" in text  # a link to the channel, not escaped text
        assert len(world.api.generations) == before

        await world.slack.slash_command("a still life", user="U7", channel=ART)
        await world.slack.wait_for(lambda: world.slack.uploads_in(ART))
        assert f"<#{ART}>" in await world.admin_says("channels list")
    finally:
        await world.admin_says(f"channels remove <#{ART}|art>")
    assert "every channel" in await world.admin_says("channels list")


async def test_spoilers_are_accepted_and_noted_as_discord_only(world: World) -> None:
    said = await world.admin_says("spoilers on")
    assert "spoilers" in said and "Discord only" in said
    assert "no longer" in await world.admin_says("spoilers off")


async def test_the_moderation_log_and_help(world: World) -> None:
    await world.refused("a pornographic mural", user="U10")
    log = await world.admin_says("moderation-log 1")
    assert "a pornographic mural" in log and "<@U10>" in log
    helptext = await world.admin_says("help")
    assert "block add WORD" in helptext and "moderation-log" in helptext
    mistake = await world.admin_says("channels allow general")
    assert "not a channel" in mistake


# -- after a restart ---------------------------------------------------------------------------


async def test_approve_works_on_a_review_posted_before_a_restart(tmp_path: Path) -> None:
    async with FakeSlack(member_channels=("C1", MODS)) as slack, FakeImageAPI() as api:
        slack.add_user(ADMIN, "ada")
        slack.add_user("U9")
        env = {
            **slack.env(),
            **api.env(),
            "SLACK_ADMIN_USER_IDS": ADMIN,
        }
        first = BotProcess(env, workdir=tmp_path)
        async with first:
            slack.watch(first)
            await slack.wait_connected()
            setup = await slack.slash_command(f"admin review-channel <#{MODS}|mods>", user=ADMIN)
            await slack.wait_for(lambda: slack.responses_to(setup))
            command = await slack.slash_command("a nude bust", user="U9")
            refusal = await slack.wait_for(
                lambda: next((r for r in slack.responses_to(command) if r.buttons()), None)
            )
            [ask] = refusal.buttons()
            click = await slack.click_note(ask, channel="C1", user="U9")
            post = await slack.wait_for(lambda: next(iter(slack.posted(MODS)), None))
            await slack.wait_for(lambda: slack.responses_to(click))  # "sent to the admins"
            await slack.wait_all_acked()
            assert await first.stop() == 0, first.log()

        second = BotProcess(env, workdir=tmp_path)
        async with second:
            slack.watch(second)
            await slack.wait_connected(connections=2)
            await slack.click(_button(post, "Approve"), post, user=ADMIN)
            [upload] = await slack.wait_for(lambda: slack.uploads_in("C1"))
            assert (upload.initial_comment or "").startswith("<@U9>")
            assert api.generations[-1].json["prompt"] == "a nude bust"
            await slack.wait_all_acked()
            assert await second.stop() == 0, second.log()
        assert "Traceback" not in first.log() + second.log(), second.log()[-6000:]
