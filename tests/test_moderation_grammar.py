"""The moderation words admins type: Slack's ``/imagine admin ...`` grammar and the
``/regex/`` convention shared by both platforms. Pure functions, no I/O."""

from __future__ import annotations

import pytest

from adapters.slack import grammar as cmd
from adapters.slack import moderation_grammar as mc
from bot.errors import InvalidRequestError
from bot.moderation.admin import split_block_term


def _parse(text: str) -> object:
    command = cmd.parse_command(text)
    return command.parse() if isinstance(command, cmd.Admin) else command


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("admin block add kumquat", mc.BlockAdd("kumquat")),
        ("admin block add bad phrase here", mc.BlockAdd("bad phrase here")),
        ("admin block add /a&lt;b+/", mc.BlockAdd("/a<b+/")),  # Slack escapes < > &
        ("admin BLOCK Remove kumquat", mc.BlockRemove("kumquat")),
        ("admin block list", mc.BlockList()),
        ("admin review-channel <#C123|mods>", mc.ReviewChannel("C123")),
        ("admin review-channel <#C123>", mc.ReviewChannel("C123")),
        ("admin review-channel none", mc.ReviewChannel(None)),
        ("admin channels allow <#C9|art>", mc.ChannelsAllow("C9")),
        ("admin channels remove G77", mc.ChannelsRemove("G77")),
        ("admin channels list", mc.ChannelsList()),
        ("admin spoilers on", mc.Spoilers(True)),
        ("admin spoilers OFF", mc.Spoilers(False)),
        ("admin moderation-log", mc.ModerationLog(7)),
        ("admin moderation-log 30", mc.ModerationLog(30)),
    ],
)
def test_moderation_words_parse(text: str, expected: mc.ModerationCommand) -> None:
    assert _parse(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("admin block add", "block add WORD"),
        ("admin block nothing", "block add WORD"),
        ("admin review-channel #general", "not a channel"),
        ("admin review-channel", "review-channel takes one channel"),
        ("admin channels allow", "channels allow #channel"),
        ("admin spoilers maybe", "on or off"),
        ("admin moderation-log 0", "1 to 366"),
        ("admin moderation-log week", "number of days"),
    ],
)
def test_moderation_mistakes_explain_themselves(text: str, reason: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        _parse(text)
    assert reason in caught.value.reason


def test_a_prompt_that_starts_with_admin_is_still_a_prompt() -> None:
    assert cmd.parse_command("admin blockade at sea") == cmd.Generate("admin blockade at sea")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kumquat", (False, "kumquat")),
        ("  two words ", (False, "two words")),
        ("/zep+elin/", (True, "zep+elin")),
        ("/", (False, "/")),
        ("//", (False, "//")),
        ("/a/", (True, "a")),
    ],
)
def test_a_regex_is_written_between_slashes(text: str, expected: tuple[bool, str]) -> None:
    assert split_block_term(text) == expected
