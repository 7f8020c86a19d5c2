"""The bot's buttons: what each shows and its custom id, ``<prefix>:<action>:<id>``.

Every button is a ``DynamicItem`` on one base class: the custom id carries the job or review
id and the rest comes from the database, so a button works on any message the bot ever sent,
across restarts. These ids are persistent: changing a prefix, an action or an id pattern
breaks the buttons on old messages. What a click does is not here; the client maps each
button's ``name`` to a feature's function (``DiscordContext.button_action``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, NamedTuple, Self

import discord

from adapters.discord.context import context_of
from adapters.discord.render import accepting
from bot.messages import BUTTON_LABELS, REVIEW_BUTTON_LABELS
from bot.service import VARIATIONS

__all__ = [
    "CUSTOM_ID",
    "Button",
    "CancelButton",
    "JobButton",
    "Look",
    "ReviewButton",
    "cancel_view",
    "custom_id",
    "refusal_view",
    "result_view",
    "retry_view",
    "review_view",
]


class Look(NamedTuple):
    label: str
    style: discord.ButtonStyle
    emoji: str | None = None


class Button(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"(?!)"):
    """A button whose custom id is ``<prefix>:<action>:<id>``. A subclass names its prefix,
    its actions with how each looks, the id's group name and pattern; the template, the
    parsing and the click (the stop waits for it; unexpected errors go to the one hook) are
    shared."""

    prefix: ClassVar[str]
    looks: ClassVar[Mapping[str, Look]]
    key: ClassVar[str]  # the id's group in ``pattern``: "job_id", "review_id"
    pattern: ClassVar[re.Pattern[str]]

    def __init_subclass__(
        cls, *, prefix: str, looks: Mapping[str, Look], key: str, id_pattern: str
    ) -> None:
        cls.prefix, cls.looks, cls.key = prefix, looks, key
        actions = "|".join(looks)
        cls.pattern = re.compile(
            rf"{re.escape(prefix)}:(?P<action>{actions}):(?P<{key}>{id_pattern})"
        )
        super().__init_subclass__(template=cls.pattern)

    def __init__(self, action: str, target: str) -> None:
        look = self.looks[action]
        super().__init__(
            discord.ui.Button(
                label=look.label,
                style=look.style,
                emoji=look.emoji,
                custom_id=self.compose(action, target),
            )
        )
        self.action = action
        self.target = target

    @classmethod
    def compose(cls, action: str, target: str) -> str:
        value = f"{cls.prefix}:{action}:{target}"
        if not cls.pattern.fullmatch(value):
            raise ValueError(f"{cls.key.replace('_', ' ')} {target!r} cannot go into a custom id")
        return value

    @classmethod
    def names(cls) -> Iterable[str]:
        return (f"{cls.prefix}:{action}" for action in cls.looks)

    @property
    def name(self) -> str:
        return f"{self.prefix}:{self.action}"

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> Self:
        return cls(match["action"], match[cls.key])

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return accepting(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        context = context_of(interaction)
        try:
            async with context.runtime.service.handling():  # a stop waits for it
                await context.button_action(self.name)(context, interaction, self.target)
        except Exception as exc:
            await context.report_unexpected(interaction, exc)


_JOB_ID = r"[\w-]{1,80}"


class JobButton(
    Button,
    prefix="imagine",
    looks={
        "reroll": Look(BUTTON_LABELS["reroll"], discord.ButtonStyle.primary, "🔄"),
        "vary": Look(f"{BUTTON_LABELS['vary']} ×{VARIATIONS}", discord.ButtonStyle.secondary, "🎲"),
        "details": Look(BUTTON_LABELS["details"], discord.ButtonStyle.secondary, "ℹ️"),
        "delete": Look(BUTTON_LABELS["delete"], discord.ButtonStyle.danger, "🗑️"),
        "retry": Look(BUTTON_LABELS["retry"], discord.ButtonStyle.primary, "🔁"),
    },
    key="job_id",
    id_pattern=_JOB_ID,
):
    """Under a result (Reroll, Variations, Details, Delete) and under a job a restart
    interrupted (Try again)."""


class CancelButton(
    Button,
    prefix="imagine",
    looks={"cancel": Look(BUTTON_LABELS["cancel"], discord.ButtonStyle.danger, "✖️")},
    key="job_id",
    id_pattern=_JOB_ID,
):
    """Under a queued job's loading message."""


class ReviewButton(
    Button,
    prefix="imagine-review",
    looks={
        "ask": Look(REVIEW_BUTTON_LABELS["ask"], discord.ButtonStyle.secondary),
        "approve": Look(REVIEW_BUTTON_LABELS["approve"], discord.ButtonStyle.success),
        "deny": Look(REVIEW_BUTTON_LABELS["deny"], discord.ButtonStyle.danger),
    },
    key="review_id",
    id_pattern=r"[\w-]{1,64}",
):
    """Ask an admin (under a refusal), Approve and Deny (on the review post)."""


CUSTOM_ID = JobButton.pattern


def custom_id(action: str, job_id: str) -> str:
    return JobButton.compose(action, job_id)


def _view(*buttons: Button) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for button in buttons:
        view.add_item(button)
    return view


def result_view(job_id: str) -> discord.ui.View:
    return _view(*(JobButton(action, job_id) for action in ("reroll", "vary", "details", "delete")))


def retry_view(job_id: str) -> discord.ui.View:
    return _view(JobButton("retry", job_id))


def cancel_view(job_id: str) -> discord.ui.View:
    return _view(CancelButton("cancel", job_id))


def refusal_view(review_id: str) -> discord.ui.View:
    return _view(ReviewButton("ask", review_id))


def review_view(review_id: str) -> discord.ui.View:
    return _view(ReviewButton("approve", review_id), ReviewButton("deny", review_id))
