"""Moderation end to end on Discord: the real ``imagine-bot run`` against the fake Discord and
image API. Refusals with "Ask an admin", the review post with Approve / Deny, the approved job
delivered in the member's channel (charged to them), Deny, the channel allow-list, spoilers,
the ``/imagine-admin`` moderation commands, and Approve after a restart.

The server's rules are shared by the whole module, so each test undoes what it changes.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from tests.fakes.discord import (
    EPHEMERAL,
    FakeChannel,
    FakeDiscord,
    FakeInteraction,
    FakeMember,
    FakeMessage,
)
from tests.fakes.image_api import FakeImageAPI, content_policy_violation
from tests.fakes.process import BotProcess

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

DAILY_IMAGES = 6
REVIEW_ID = re.compile(r"imagine-review:(ask|approve|deny):(?P<id>[\w-]+)")


@dataclass
class World:
    discord: FakeDiscord
    api: FakeImageAPI
    bot: BotProcess
    admin: FakeMember
    mods: FakeChannel
    art: FakeChannel
    nsfw: FakeChannel

    async def imagine(
        self, prompt: str, member: FakeMember, *, channel: FakeChannel | None = None
    ) -> tuple[FakeInteraction, FakeMessage]:
        interaction = await self.discord.slash(
            "imagine", {"prompt": prompt}, member=member, channel=channel
        )
        return interaction, await self.discord.wait_response(interaction)

    async def admin_says(
        self,
        subcommand: str,
        group: str | None = None,
        *,
        member: FakeMember | None = None,
        **options: object,
    ) -> str:
        interaction = await self.discord.slash(
            "imagine-admin",
            options,
            subcommand=subcommand,
            group=group,
            member=member or self.admin,
        )
        message = await self.discord.wait_response(interaction)
        assert message.ephemeral, message
        return message.content

    async def quota(self, member: FakeMember) -> str:
        interaction = await self.discord.slash("quota", member=member)
        return (await self.discord.wait_response(interaction)).content

    async def refused(self, prompt: str, member: FakeMember) -> FakeMessage:
        """``prompt`` is refused privately, with the Ask an admin button."""
        before = len(self.api.generations)
        _, message = await self.imagine(prompt, member)
        assert message.ephemeral, message
        assert "refused by this server's rules" in message.content
        assert message.button("Ask an admin")
        assert len(self.api.generations) == before
        return message

    async def ask(self, refusal: FakeMessage, member: FakeMember) -> FakeMessage:
        """Press Ask an admin; returns the review post in the review channel."""
        review_id = _review_id(refusal.button("Ask an admin"))
        click = await self.discord.click(refusal, "Ask an admin", member=member)
        await self.discord.wait_for(lambda: click.acked)
        return await self.discord.wait_for(lambda: self._review_post(review_id))

    def _review_post(self, review_id: str) -> FakeMessage | None:
        for message in self.discord.channel_messages(channel_id=self.mods.id):
            if any(review_id in b.get("custom_id", "") for b in message.buttons()):
                return message
        return None


def _review_id(button: dict[str, object]) -> str:
    match = REVIEW_ID.fullmatch(str(button.get("custom_id")))
    assert match, button
    return match["id"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    workdir: Path = tmp_path_factory.mktemp("discord-moderation")
    async with FakeDiscord() as discord, FakeImageAPI() as api:
        mods = discord.add_channel("mods")
        art = discord.add_channel("art")
        nsfw = discord.add_channel("after-dark", nsfw=True)
        env = {
            **discord.env(),
            **api.env(),
            "IMAGE_API_MAX_RETRIES": "0",
            "DEFAULT_IMAGES_PER_DAY": str(DAILY_IMAGES),
        }
        bot = BotProcess(env, workdir=workdir)
        async with bot:
            discord.watch(bot)
            try:
                await discord.wait_connected()
                admin = discord.member("boss", manage_guild=True)
                world = World(discord, api, bot, admin, mods, art, nsfw)
                assert mods.mention in await world.admin_says("review-channel", channel=mods)
                yield world
                assert bot.running, "a test stopped the shared bot: give it a process of its own"
            except BaseException:
                print(bot.log())
                raise
        assert "Traceback" not in bot.log(), bot.log()[-6000:]


# -- refusals -----------------------------------------------------------------------------


async def test_a_blocked_word_is_refused_privately_without_cost_or_provider_call(
    world: World,
) -> None:
    member = world.discord.member()
    before = len(world.api.generations)
    interaction, message = await world.imagine("a n.u.d.e portrait", member)

    assert message.ephemeral
    assert message.content.startswith("This prompt was refused by this server's rules")
    assert "nude" not in message.content  # the rule is never shown to the member
    [button] = message.buttons()
    assert button["label"] == "Ask an admin"
    assert len(world.api.generations) == before
    # The public "thinking" message is gone, nothing was held or charged.
    assert world.discord.messages[interaction.original_id or ""].deleted
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in await world.quota(member)


async def test_a_negative_prompt_is_screened_too(world: World) -> None:
    member = world.discord.member()
    interaction = await world.discord.slash(
        "imagine", {"prompt": "a beach", "negative": "nudity"}, member=member
    )
    message = await world.discord.wait_response(interaction)
    assert message.ephemeral and "refused" in message.content


# -- Ask an admin, Approve, Deny ------------------------------------------------------------


async def test_ask_an_admin_posts_the_prompt_to_the_review_channel(world: World) -> None:
    member = world.discord.member("carol")
    refusal = await world.refused("a nude statue in a museum", member)
    post = await world.ask(refusal, member)

    # The member's refusal became "sent to the admins", without the button.
    await world.discord.wait_for(lambda: not refusal.buttons())
    assert refusal.ephemeral and "admins" in refusal.content
    # The admins see the prompt, who asked where, and what matched; no one is pinged.
    assert post.channel_id == world.mods.id
    text = post.text
    assert "a nude statue in a museum" in text
    assert member.mention in text and f"<#{world.discord.channel_id}>" in text
    assert "nude" in text.replace("a nude statue in a museum", "")  # the rule
    assert [b["label"] for b in post.buttons()] == ["Approve", "Deny"]
    assert post.mentioned_user_ids() == set()

    # A second request for the same review is refused (the button is gone, but a replayed
    # click must not post twice).
    posts = len(world.discord.channel_messages(channel_id=world.mods.id))
    again = await world.discord.click(refusal_copy(refusal, post), "Ask an admin", member=member)
    answer = await world.discord.wait_response(again)
    assert answer.ephemeral and "already asked" in answer.content
    assert len(world.discord.channel_messages(channel_id=world.mods.id)) == posts


def refusal_copy(refusal: FakeMessage, post: FakeMessage) -> FakeMessage:
    """The refusal as it was before the click (with its Ask an admin button)."""
    review_id = _review_id(post.button("Approve"))
    return FakeMessage(
        id=refusal.id,
        channel_id=refusal.channel_id,
        author_id=refusal.author_id,
        content=refusal.content,
        components=[
            {
                "type": 1,
                "components": [
                    {
                        "type": 2,
                        "style": 2,
                        "label": "Ask an admin",
                        "custom_id": f"imagine-review:ask:{review_id}",
                    }
                ],
            }
        ],
        flags=EPHEMERAL,
    )


async def test_only_an_admin_may_approve_and_the_approved_job_is_charged_to_the_member(
    world: World,
) -> None:
    member, bystander = world.discord.member("dave"), world.discord.member()
    refusal = await world.refused("a nude figure drawing class", member)
    post = await world.ask(refusal, member)

    before = len(world.api.generations)
    refused = await world.discord.click(post, "Approve", member=bystander)
    answer = await world.discord.wait_response(refused)
    assert answer.ephemeral and "Only admins can approve or deny reviews" in answer.content
    assert [b["label"] for b in post.buttons()] == ["Approve", "Deny"]
    assert len(world.api.generations) == before

    await world.discord.click(post, "Approve", member=world.admin)
    [result] = await world.discord.wait_for(
        lambda: [
            m
            for m in world.discord.channel_messages(channel_id=world.discord.channel_id)
            if m.attachments and member.mention in m.content
        ]
    )
    assert result.mentioned_user_ids() == {member.id}
    assert result.embeds[0]["description"] == "a nude figure drawing class"
    assert result.attachments[0].image().size == (1024, 1024)
    assert result.buttons()[0]["label"] == "Reroll"
    [call] = world.api.generations[before:]
    assert call.json["prompt"] == "a nude figure drawing class"
    # The review post says who approved it and has no buttons any more.
    await world.discord.wait_for(lambda: not post.buttons())
    assert f"Approved by {world.admin.mention}" in post.text
    # Charged to the member who asked, not to the admin.
    assert f"{DAILY_IMAGES - 1} images left of {DAILY_IMAGES}" in await world.quota(member)
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in await world.quota(world.admin)

    # A second decision is refused.
    again = await world.discord.click(
        approve_copy(post, _review_id_of(post)), "Deny", member=world.admin
    )
    late = await world.discord.wait_response(again)
    assert late.ephemeral and "already decided" in late.content


def _review_id_of(post: FakeMessage) -> str:
    match = re.search(r"review ([\w-]+)", post.text)
    assert match, post.text
    return match.group(1)


def approve_copy(post: FakeMessage, review_id: str) -> FakeMessage:
    """The review post as it was before the decision (a replayed click)."""
    buttons = [
        {
            "type": 2,
            "style": 3,
            "label": "Approve",
            "custom_id": f"imagine-review:approve:{review_id}",
        },
        {"type": 2, "style": 4, "label": "Deny", "custom_id": f"imagine-review:deny:{review_id}"},
    ]
    return FakeMessage(
        id=post.id,
        channel_id=post.channel_id,
        author_id=post.author_id,
        content=post.content,
        components=[{"type": 1, "components": buttons}],
    )


async def test_deny_tells_the_member_without_repeating_the_prompt(world: World) -> None:
    member = world.discord.member("erin")
    refusal = await world.refused("a porn parody poster", member)
    post = await world.ask(refusal, member)
    before = len(world.api.generations)

    await world.discord.click(post, "Deny", member=world.admin)
    told = await world.discord.wait_for(
        lambda: [
            m
            for m in world.discord.channel_messages(channel_id=world.discord.channel_id)
            if member.mention in m.content and not m.attachments
        ]
    )
    [note] = told
    assert note.mentioned_user_ids() == {member.id}
    assert "parody" not in note.content
    await world.discord.wait_for(lambda: not post.buttons())
    assert f"Denied by {world.admin.mention}" in post.text
    assert len(world.api.generations) == before
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in await world.quota(member)


async def test_an_approved_job_that_fails_is_refunded_and_both_are_told(world: World) -> None:
    member = world.discord.member("frank")
    refusal = await world.refused("a nude marble torso", member)
    post = await world.ask(refusal, member)
    world.api.script(content_policy_violation())

    click = await world.discord.click(post, "Approve", member=world.admin)
    # The admin is told privately why the job did not run...
    answer = await world.discord.wait_response(click)
    assert answer.ephemeral and answer.content.startswith("Approved, but the job did not run")
    assert "content policy" in answer.content
    # ... and the member, mentioned in the channel they asked in, without the prompt.
    [note] = await world.discord.wait_for(
        lambda: [
            m
            for m in world.discord.channel_messages(channel_id=world.discord.channel_id)
            if member.mention in m.content and "content policy" in m.content
        ]
    )
    assert note.mentioned_user_ids() == {member.id} and not note.attachments
    assert "torso" not in note.content
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in await world.quota(member)


# -- admin commands -------------------------------------------------------------------------


async def test_admins_block_list_and_unblock_words_and_patterns(world: World) -> None:
    member = world.discord.member()
    text = await world.admin_says("add", "block", term="kumquat")
    assert "kumquat" in text
    assert "zep+elin" in await world.admin_says("add", "block", term="/zep+elin/")
    listed = await world.admin_says("list", "block")
    assert "kumquat" in listed and "zep+elin" in listed

    await world.refused("a kumquat tree", member)
    await world.refused("a zeppppelin at dawn", member)

    await world.admin_says("remove", "block", term="kumquat")
    await world.admin_says("remove", "block", term="/zep+elin/")
    listed = await world.admin_says("list", "block")
    assert "kumquat" not in listed and "zep+elin" not in listed
    _, delivered = await world.imagine("a kumquat tree", member)
    assert len(delivered.attachments) == 1


async def test_a_member_cannot_use_the_moderation_commands(world: World) -> None:
    member = world.discord.member()
    text = await world.admin_says("add", "block", member=member, term="tangerine")
    assert "Only admins" in text
    _, delivered = await world.imagine("a tangerine", member)
    assert len(delivered.attachments) == 1


async def test_the_channel_allow_list_points_members_at_the_allowed_channel(world: World) -> None:
    member = world.discord.member()
    assert world.art.mention in await world.admin_says("allow", "channels", channel=world.art)
    try:
        before = len(world.api.generations)
        _, refused = await world.imagine("a still life", member)
        assert refused.ephemeral
        assert "isn't enabled in this channel" in refused.content
        assert world.art.mention in refused.content
        assert not refused.buttons()  # nothing to review: it's about the channel
        assert len(world.api.generations) == before

        _, allowed = await world.imagine("a still life", member, channel=world.art)
        assert allowed.channel_id == world.art.id and len(allowed.attachments) == 1
        assert world.art.mention in await world.admin_says("list", "channels")
    finally:
        await world.admin_says("remove", "channels", channel=world.art)
    _, anywhere = await world.imagine("a still life again", member)
    assert len(anywhere.attachments) == 1


async def test_spoilers_outside_nsfw_channels(world: World) -> None:
    member = world.discord.member()
    assert "spoiler" in (await world.admin_says("on", "spoilers")).casefold()
    try:
        _, hidden = await world.imagine("a surprise", member)
        [image] = hidden.attachments
        assert image.filename.startswith("SPOILER_")
        _, shown = await world.imagine("a surprise", member, channel=world.nsfw)
        assert not shown.attachments[0].filename.startswith("SPOILER_")
    finally:
        await world.admin_says("off", "spoilers")
    _, plain = await world.imagine("no surprise", member)
    assert not plain.attachments[0].filename.startswith("SPOILER_")


async def test_the_moderation_log_lists_refusals_with_their_rule(world: World) -> None:
    member = world.discord.member("frank")
    await world.refused("a pornographic mural", member)
    text = await world.admin_says("moderation-log", days=1)
    assert "a pornographic mural" in text
    assert member.mention in text


async def test_clearing_the_review_channel_means_no_admin_to_ask(world: World) -> None:
    member = world.discord.member()
    refusal = await world.refused("nude again", member)
    await world.admin_says("review-channel")  # no channel: clear
    try:
        click = await world.discord.click(refusal, "Ask an admin", member=member)
        answer = await world.discord.wait_response(click)
        assert answer.ephemeral and "no review channel" in answer.content
    finally:
        await world.admin_says("review-channel", channel=world.mods)


async def test_the_moderation_commands_are_registered_under_imagine_admin(world: World) -> None:
    [sync] = world.discord.command_syncs
    admin = next(c for c in sync.commands if c["name"] == "imagine-admin")
    options = {o["name"]: o for o in admin["options"]}
    assert {o["name"] for o in options["block"]["options"]} == {"add", "remove", "list"}
    assert {o["name"] for o in options["channels"]["options"]} == {"allow", "remove", "list"}
    assert {o["name"] for o in options["spoilers"]["options"]} == {"on", "off"}
    [channel] = options["review-channel"]["options"]
    assert channel["type"] == 7 and not channel.get("required")
    assert options["moderation-log"]["options"][0]["name"] == "days"


# -- after a restart ---------------------------------------------------------------------------


async def test_approve_works_on_a_review_posted_before_a_restart(tmp_path: Path) -> None:
    async with FakeDiscord() as discord, FakeImageAPI() as api:
        mods = discord.add_channel("mods")
        env = {**discord.env(), **api.env()}
        admin, member = discord.member("boss", admin=True), discord.member("gail")

        first = BotProcess(env, workdir=tmp_path)
        async with first:
            discord.watch(first)
            await discord.wait_connected()
            setup = await discord.slash(
                "imagine-admin", {"channel": mods}, subcommand="review-channel", member=admin
            )
            await discord.wait_response(setup)
            command = await discord.slash("imagine", {"prompt": "a nude bust"}, member=member)
            refusal = await discord.wait_response(command)
            await discord.click(refusal, "Ask an admin", member=member)
            post = await discord.wait_for(
                lambda: next(iter(discord.channel_messages(channel_id=mods.id)), None)
            )
            await discord.wait_for(lambda: not refusal.buttons())  # the click is answered
            assert await first.stop() == 0, first.log()

        second = BotProcess(env, workdir=tmp_path)
        async with second:
            discord.watch(second)
            await discord.wait_connected(connections=2)
            await discord.click(post, "Approve", member=admin)
            [result] = await discord.wait_for(
                lambda: [
                    m
                    for m in discord.channel_messages(channel_id=discord.channel_id)
                    if m.attachments
                ]
            )
            assert member.mention in result.content
            assert result.embeds[0]["description"] == "a nude bust"
            assert api.generations[-1].json["prompt"] == "a nude bust"
            await discord.wait_for(lambda: not post.buttons())
            assert await second.stop() == 0, second.log()
        assert "Traceback" not in first.log() + second.log(), second.log()[-6000:]
