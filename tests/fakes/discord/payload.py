"""What the fake Discord speaks and records: Discord's constants, the API error it answers
with, the members, channels, messages, attachments and interactions a test sees, and the
checks Discord applies to message and command bodies (400 code 50035 when they fail)."""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

__all__ = [
    "ADMINISTRATOR",
    "ALL_PERMISSIONS",
    "DEFAULT_ATTACHMENT_LIMIT",
    "DISCORD_EPOCH_MS",
    "EPHEMERAL",
    "GUILDS_INTENT",
    "LOADING",
    "MANAGE_GUILD",
    "MEMBER_PERMISSIONS",
    "PRIVILEGED_INTENTS",
    "TOKEN_LIFETIME_S",
    "CommandSync",
    "DiscordAPIError",
    "FakeAttachment",
    "FakeChannel",
    "FakeGuild",
    "FakeInteraction",
    "FakeMember",
    "FakeMessage",
    "FakeUser",
    "RecordedRequest",
    "decode_attachment",
    "shard_of",
    "snowflake_time",
    "validate_command",
    "validate_message",
    "validate_options",
]

DISCORD_EPOCH_MS = 1_420_070_400_000
EPHEMERAL = 1 << 6
LOADING = 1 << 7
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
ALL_PERMISSIONS = (1 << 51) - 1
# View Channel, Send Messages, Embed Links, Attach Files, Read Message History,
# Use Application Commands: what @everyone has in a typical server.
MEMBER_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 31)
# GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)
GUILDS_INTENT = 1
TOKEN_LIFETIME_S = 15 * 60
DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024


_NAME_RE = re.compile(r"^[-_\w]{1,32}$")
_MENTION_RE = re.compile(r"<@!?(\d+)>")


class DiscordAPIError(Exception):
    """Raised inside a handler; becomes Discord's JSON error body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def snowflake_time(snowflake: str | int) -> float:
    """Unix time (seconds) encoded in a snowflake."""
    return ((int(snowflake) >> 22) + DISCORD_EPOCH_MS) / 1000


@dataclass
class FakeMember:
    id: str
    username: str
    roles: tuple[str, ...] = ()
    permissions: int = MEMBER_PERMISSIONS

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def user_payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "discriminator": "0",
            "global_name": self.username.title(),
            "avatar": None,
            "public_flags": 0,
        }

    def member_payload(self, *, with_user: bool = True) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "roles": list(self.roles),
            "flags": 0,
            "permissions": str(self.permissions),
            "joined_at": "2024-01-01T00:00:00.000000+00:00",
            "premium_since": None,
            "nick": None,
            "avatar": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            payload["user"] = self.user_payload()
        return payload


@dataclass
class FakeUser:
    """A Discord user who is not a member of the server (e.g. one who left): a USER option
    naming them resolves to ``users`` only, with no ``members`` entry, as Discord sends it."""

    id: str
    username: str

    def user_payload(self) -> dict[str, Any]:
        return FakeMember(self.id, self.username).user_payload()


@dataclass(frozen=True)
class FakeGuild:
    """A server the bot is in, with its one text channel (``FakeDiscord.add_guild``; the
    default server is ``FakeDiscord.guild_id`` with ``FakeDiscord.channel_id``)."""

    id: str
    name: str
    channel_id: str

    def shard(self, count: int) -> int:
        return shard_of(self.id, count)


def shard_of(guild_id: str, count: int) -> int:
    """The shard whose sessions receive the guild's events, as Discord computes it."""
    return (int(guild_id) >> 22) % count


@dataclass
class FakeChannel:
    """A text channel besides the default one (``FakeDiscord.add_channel``)."""

    id: str
    name: str
    nsfw: bool = False

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"


@dataclass
class FakeAttachment:
    id: str
    filename: str
    data: bytes = field(repr=False)
    content_type: str | None
    description: str | None = None
    width: int | None = None
    height: int | None = None
    image_format: str | None = None  # what Pillow decoded ("PNG", "WEBP", "JPEG"), if anything

    @property
    def size(self) -> int:
        return len(self.data)

    def image(self) -> Image.Image:
        """The attachment decoded (fully loaded) by Pillow."""
        with Image.open(io.BytesIO(self.data)) as opened:
            opened.load()
            return opened.copy()


@dataclass
class FakeMessage:
    id: str
    channel_id: str
    author_id: str
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[FakeAttachment] = field(default_factory=list)
    flags: int = 0
    interaction_id: str | None = None  # the interaction whose response or followup this is
    via: str = "channel"  # "callback", "followup" or "channel"
    allowed_mentions: dict[str, Any] | None = None
    deleted: bool = False
    edits: int = 0
    history: list[str] = field(default_factory=list)  # content after each edit
    created_at: float = field(default_factory=time.monotonic)
    message_type: int = 0

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    @property
    def text(self) -> str:
        """Content plus every embed's visible text, for assertions on wording."""
        parts = [self.content]
        for embed in self.embeds:
            parts += [embed.get("title", ""), embed.get("description", "")]
            for item in embed.get("fields", []):
                parts += [item.get("name", ""), item.get("value", "")]
            parts.append(embed.get("footer", {}).get("text", ""))
        return "\n".join(p for p in parts if p)

    def buttons(self) -> list[dict[str, Any]]:
        return [
            component
            for row in self.components
            for component in row.get("components", [])
            if component.get("type") == 2
        ]

    def button(self, label: str) -> dict[str, Any]:
        for button in self.buttons():
            if str(button.get("label", "")).casefold().startswith(label.casefold()):
                return button
        raise KeyError(f"no button {label!r} on message {self.id}: {self.buttons()}")

    def mentioned_user_ids(self) -> set[str]:
        """The users this message pings, honouring ``allowed_mentions`` as Discord does."""
        found = set(_MENTION_RE.findall(self.content))
        allowed = self.allowed_mentions
        if allowed is None:
            return found
        if "users" in allowed.get("parse", []):
            return found
        return found & {str(u) for u in allowed.get("users", [])}


@dataclass
class FakeInteraction:
    id: str
    token: str
    type: int
    payload: dict[str, Any] = field(repr=False)
    member: FakeMember
    attachment_size_limit: int
    sent_at: float = field(default_factory=time.monotonic)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    acked_at: float | None = None
    original_id: str | None = None  # the response message (or, for type 6/7, the clicked one)
    followup_ids: list[str] = field(default_factory=list)
    expired: bool = False

    @property
    def acked(self) -> bool:
        return self.acked_at is not None

    @property
    def ack_delay(self) -> float | None:
        return None if self.acked_at is None else self.acked_at - self.sent_at

    @property
    def callback_type(self) -> int | None:
        return self.callbacks[0]["type"] if self.callbacks else None

    @property
    def token_expired(self) -> bool:
        return self.expired or time.time() > snowflake_time(self.id) + TOKEN_LIFETIME_S


@dataclass
class CommandSync:
    guild_id: str | None
    commands: list[dict[str, Any]]


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    status: int = 0
    at: float = field(default_factory=time.monotonic)


def decode_attachment(
    attachment_id: str, filename: str, data: bytes, description: str | None
) -> FakeAttachment:
    width = height = None
    image_format = None
    content_type = None
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            width, height = opened.size
            image_format = opened.format
            content_type = Image.MIME.get(opened.format or "")
    except Exception:
        content_type = "text/csv" if filename.endswith(".csv") else "application/octet-stream"
    return FakeAttachment(
        id=attachment_id,
        filename=filename,
        data=data,
        content_type=content_type,
        description=description,
        width=width,
        height=height,
        image_format=image_format,
    )


def validate_message(body: dict[str, Any]) -> None:
    content = body.get("content") or ""
    if len(content) > 2000:
        raise DiscordAPIError(400, 50035, "Invalid Form Body: content: Must be 2000 or fewer")
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        raise DiscordAPIError(400, 50035, "Invalid Form Body: embeds: Must be 10 or fewer")
    total = 0
    for embed in embeds:
        limits = {"title": 256, "description": 4096}
        for key, most in limits.items():
            value = embed.get(key) or ""
            if len(value) > most:
                raise DiscordAPIError(400, 50035, f"Invalid Form Body: embed {key} too long")
            total += len(value)
        fields = embed.get("fields") or []
        if len(fields) > 25:
            raise DiscordAPIError(400, 50035, "Invalid Form Body: embed has over 25 fields")
        for item in fields:
            name, value = item.get("name") or "", item.get("value") or ""
            if not name or not value or len(name) > 256 or len(value) > 1024:
                raise DiscordAPIError(400, 50035, "Invalid Form Body: embed field name/value")
            total += len(name) + len(value)
        footer = (embed.get("footer") or {}).get("text") or ""
        if len(footer) > 2048:
            raise DiscordAPIError(400, 50035, "Invalid Form Body: embed footer too long")
        total += len(footer)
    if total > 6000:
        raise DiscordAPIError(400, 50035, "Invalid Form Body: embeds exceed 6000 characters")
    for row in body.get("components") or []:
        if row.get("type") != 1 or len(row.get("components") or []) > 5:
            raise DiscordAPIError(400, 50035, "Invalid Form Body: components")
        for component in row["components"]:
            custom_id = component.get("custom_id")
            is_link = component.get("style") == 5
            if component.get("type") == 2 and not is_link and not 1 <= len(custom_id or "") <= 100:
                raise DiscordAPIError(400, 50035, "Invalid Form Body: custom_id")
            label = component.get("label") or ""
            if len(label) > 80:
                raise DiscordAPIError(400, 50035, "Invalid Form Body: label")


def validate_command(command: dict[str, Any]) -> None:
    name = command.get("name", "")
    description = command.get("description", "")
    kind = command.get("type", 1)
    if kind == 1 and (not _NAME_RE.match(name) or name != name.lower()):
        raise DiscordAPIError(400, 50035, f"Invalid Form Body: command name {name!r}")
    if kind == 1 and not 1 <= len(description) <= 100:
        raise DiscordAPIError(400, 50035, f"Invalid Form Body: description of {name!r}")
    permissions = command.get("default_member_permissions")
    if permissions is not None and not str(permissions).isdigit():
        raise DiscordAPIError(400, 50035, "Invalid Form Body: default_member_permissions")
    validate_options(command.get("options") or [], where=name)


def validate_options(options: list[dict[str, Any]], *, where: str) -> None:
    if len(options) > 25:
        raise DiscordAPIError(400, 50035, f"Invalid Form Body: {where} has over 25 options")
    seen_optional = False
    for option in options:
        name = option.get("name", "")
        if not _NAME_RE.match(name) or name != name.lower():
            raise DiscordAPIError(400, 50035, f"Invalid Form Body: option name {name!r}")
        if not 1 <= len(option.get("description", "")) <= 100:
            raise DiscordAPIError(400, 50035, f"Invalid Form Body: description of {name!r}")
        if option.get("type") in (1, 2):
            validate_options(option.get("options") or [], where=f"{where} {name}")
            continue
        if option.get("required"):
            if seen_optional:
                raise DiscordAPIError(
                    400, 50035, f"Invalid Form Body: required {name!r} after optional options"
                )
        else:
            seen_optional = True
        choices = option.get("choices") or []
        if len(choices) > 25:
            raise DiscordAPIError(400, 50035, f"Invalid Form Body: {name!r} has over 25 choices")
        if choices and option.get("autocomplete"):
            raise DiscordAPIError(400, 50035, "Invalid Form Body: choices with autocomplete")
