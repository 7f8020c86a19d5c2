"""A loopback fake Discord for end-to-end tests: the REST routes a bot uses and a gateway
websocket, on 127.0.0.1 with a free port, speaking the wire format discord.py 2.7 expects
(see /work/shared/reference/protocol-facts.md, part A).

The real discord.py connects to it through ``Route.BASE`` and ``DEFAULT_GATEWAY``
(``DISCORD_API_BASE_URL`` / ``DISCORD_GATEWAY_URL``). Everything the bot sends is recorded:
IDENTIFY payloads, command syncs, interaction callbacks, messages with their attachments
(decoded), edits and deletions. Tests inject interactions (slash commands, button clicks) and
wait on conditions; nothing here sleeps.

Rules the fake enforces like the real thing, because naive bots break on them:

- an interaction must be acknowledged within ``ack_deadline`` (3 s) of its delivery and only
  once (404 code 10062 "Unknown interaction", 400 code 40060 "already acknowledged");
- after a deferred (type 5) response, the first followup replaces the loading message and
  ignores the ephemeral flag; once the loading message is deleted, a followup is a new message;
- interaction tokens work for 15 minutes from the interaction's snowflake time (401 code 50027
  after; ``expire()`` ends one early);
- each attachment must fit the interaction's ``attachment_size_limit`` (413 code 40005), at
  most 10 attachments (400 code 30015), content <= 2000 characters, <= 10 embeds within the
  documented field lengths and 6000 characters in all (400 code 50035);
- JSON replies carry ``Content-Type: application/json`` exactly;
- every identified gateway session receives every event, as Discord does for several sessions
  of one shard (two copies of a bot both see each interaction; the first to acknowledge it
  answers, the other gets 40060).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import WSMsgType, web
from PIL import Image

from tests.fakes.loopback import serve_loopback
from tests.fakes.observer import Observed

__all__ = [
    "ADMINISTRATOR",
    "DISCORD_EPOCH_MS",
    "EPHEMERAL",
    "LOADING",
    "MANAGE_GUILD",
    "MEMBER_PERMISSIONS",
    "PRIVILEGED_INTENTS",
    "CommandSync",
    "DiscordAPIError",
    "FakeAttachment",
    "FakeChannel",
    "FakeDiscord",
    "FakeInteraction",
    "FakeMember",
    "FakeMessage",
    "FakeUser",
    "RecordedRequest",
    "snowflake_time",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

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
_FILE_FIELD_RE = re.compile(r"^files\[(\d+)\]$")
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


class FakeDiscord(Observed):
    """``async with FakeDiscord() as discord: ...``; ``discord.env()`` gives the variables the
    bot needs to connect to it."""

    name = "fake Discord"

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        ack_deadline: float = 3.0,
        attachment_size_limit: int = DEFAULT_ATTACHMENT_LIMIT,
    ) -> None:
        super().__init__()
        self.token = token
        self.ack_deadline = ack_deadline
        self.attachment_size_limit = attachment_size_limit
        self._ids = itertools.count()
        self.application_id = self.snowflake()
        self.bot_user_id = self.application_id
        self.owner_id = self.snowflake()
        self.guild_id = self.snowflake()
        self.channel_id = self.snowflake()
        self.channel_name = "imagine"
        self.extra_channels: dict[str, FakeChannel] = {}

        self.requests: list[RecordedRequest] = []
        self.unhandled: list[RecordedRequest] = []
        self.identifies: list[dict[str, Any]] = []
        self.ready_sent = 0
        self.heartbeats = 0
        self.command_syncs: list[CommandSync] = []
        self.interactions: dict[str, FakeInteraction] = {}
        self.messages: dict[str, FakeMessage] = {}
        self.errors_returned: list[tuple[str, int, int]] = []  # (path, status, code)
        self.roles: dict[str, dict[str, Any]] = {}
        self._rate_limits: list[tuple[str, str, float]] = []
        self._rejections: list[tuple[str, str, bool, int, int, str]] = []
        # Identified sessions and the last sequence number each was sent.
        self._sessions: dict[web.WebSocketResponse, int] = {}
        self._ws_lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_get("/", self._gateway)
        app.router.add_route("*", "/{tail:.*}", self._rest)
        self._runner, self.port = await serve_loopback(app)

    async def close(self) -> None:
        self._stop_watching()
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def api_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def env(self, *, guild_sync: bool = True) -> dict[str, str]:
        env = {
            "DISCORD_TOKEN": self.token,
            "DISCORD_API_BASE_URL": self.api_base_url,
            "DISCORD_GATEWAY_URL": self.gateway_url,
        }
        if guild_sync:
            env["DISCORD_GUILD_IDS"] = self.guild_id
        return env

    # -- ids, members ---------------------------------------------------------------------

    def snowflake(self, at: float | None = None) -> str:
        ms = int((time.time() if at is None else at) * 1000)
        return str(((ms - DISCORD_EPOCH_MS) << 22) | (next(self._ids) % (1 << 22)))

    def member(
        self,
        name: str | None = None,
        *,
        roles: Iterable[str] = (),
        admin: bool = False,
        manage_guild: bool = False,
    ) -> FakeMember:
        """A new server member; ``admin`` has every permission (as Discord resolves it for
        Administrator), ``manage_guild`` adds only Manage Server."""
        user_id = self.snowflake()
        permissions = MEMBER_PERMISSIONS
        if admin:
            permissions = ALL_PERMISSIONS
        elif manage_guild:
            permissions |= MANAGE_GUILD
        return FakeMember(
            id=user_id,
            username=name or f"member{user_id[-6:]}",
            roles=tuple(roles),
            permissions=permissions,
        )

    def add_channel(self, name: str, *, nsfw: bool = False) -> FakeChannel:
        """Another text channel in the server (add it before the bot connects, so that it
        is in the server's channel list; a later one reaches the bot with each interaction)."""
        channel = FakeChannel(id=self.snowflake(), name=name, nsfw=nsfw)
        self.extra_channels[channel.id] = channel
        return channel

    async def create_role(self, name: str | None = None) -> str:
        """A new server role, announced to the bot (GUILD_ROLE_CREATE) as Discord does."""
        role_id = self.snowflake()
        role = self._role_payload(role_id)
        if name:
            role["name"] = name
        self.roles[role_id] = role
        await self.dispatch("GUILD_ROLE_CREATE", {"guild_id": self.guild_id, "role": role})
        return role_id

    # -- waiting ----------------------------------------------------------------------------

    def summary(self) -> str:
        lines = [f"  {r.method} {r.path} -> {r.status}" for r in self.requests[-25:]]
        return "\n".join(lines) or "  nothing"

    async def wait_connected(
        self,
        *,
        connections: int = 1,
        timeout: float = 20.0,
    ) -> None:
        """Until the bot has identified ``connections`` times and READY was sent back."""
        await self.wait_for(lambda: self.ready_sent >= connections, timeout=timeout)

    async def wait_response(
        self,
        interaction: FakeInteraction,
        *,
        final: Callable[[FakeMessage], object] | None = None,
        timeout: float = 15.0,
    ) -> FakeMessage:
        """The first message answering ``interaction`` (its response or a followup) for which
        ``final`` holds; by default one with embeds or files, or an ephemeral one: not a
        loading placeholder or a progress line."""
        done = final or (lambda m: m.embeds or m.attachments or m.ephemeral)

        def found() -> FakeMessage | None:
            for message in self.messages_for(interaction):
                if not message.deleted and not message.loading and done(message):
                    return message
            return None

        return await self.wait_for(found, timeout=timeout)

    def messages_for(self, interaction: FakeInteraction) -> list[FakeMessage]:
        """The response message (if the interaction created one) and its followups; for a
        component interaction deferred as an update, the clicked message is not included."""
        ids = []
        if interaction.original_id and interaction.callback_type in (4, 5):
            ids.append(interaction.original_id)
        ids += interaction.followup_ids
        return [self.messages[i] for i in dict.fromkeys(ids) if i in self.messages]

    def channel_messages(
        self, *, include_deleted: bool = False, channel_id: str | None = None
    ) -> list[FakeMessage]:
        return [
            m
            for m in self.messages.values()
            if m.via == "channel"
            and (include_deleted or not m.deleted)
            and (channel_id is None or m.channel_id == channel_id)
        ]

    def requests_to(self, fragment: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if fragment in r.path and (method is None or r.method == method)
        ]

    def rate_limit_next(
        self, path_fragment: str, *, method: str = "PATCH", retry_after: float = 0.05
    ) -> None:
        """Answer the next ``method`` request whose path contains ``path_fragment`` with a 429
        as Discord sends it (JSON body, ``Via`` header, rate-limit headers)."""
        self._rate_limits.append((method, path_fragment, retry_after))

    def reject_next(
        self,
        path_fragment: str,
        *,
        method: str,
        status: int,
        code: int,
        message: str,
        with_files: bool = False,
    ) -> None:
        """Answer the next matching request (only a multipart one with ``with_files``) with
        Discord's JSON error ``{"message", "code"}``."""
        self._rejections.append((method, path_fragment, with_files, status, code, message))

    async def redeliver(self, interaction: FakeInteraction) -> None:
        """Send the same INTERACTION_CREATE again, as the gateway may after a reconnect."""
        await self.dispatch("INTERACTION_CREATE", interaction.payload)

    def expire(self, interaction: FakeInteraction) -> None:
        """End the interaction's token now, as 15 minutes passing would."""
        interaction.expired = True

    # -- injecting interactions -------------------------------------------------------------

    async def slash(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        member: FakeMember,
        subcommand: str | None = None,
        resolved_members: Iterable[FakeMember] = (),
        resolved_roles: Iterable[str] = (),
        attachment_size_limit: int | None = None,
        group: str | None = None,
        channel: FakeChannel | None = None,
    ) -> FakeInteraction:
        """Deliver a slash command (type 2) as Discord would for a guild command. ``options``
        maps option names to values; a ``FakeMember`` value becomes a USER option with its
        resolved data, a value in ``resolved_roles`` a ROLE option."""
        roles = set(resolved_roles)
        resolved: dict[str, dict[str, Any]] = {}
        built = []
        for option_name, value in (options or {}).items():
            if value is None:
                continue
            built.append(self._option(option_name, value, roles, resolved))
        for extra in resolved_members:
            resolved.setdefault("users", {})[extra.id] = extra.user_payload()
            resolved.setdefault("members", {})[extra.id] = extra.member_payload(with_user=False)
        if subcommand is not None:
            built = [{"name": subcommand, "type": 1, "options": built}]
        if group is not None:  # a subcommand group: /name group subcommand
            built = [{"name": group, "type": 2, "options": built}]
        command = self._synced_command(name)
        data: dict[str, Any] = {
            "id": command.get("id", self.snowflake()) if command else self.snowflake(),
            "name": name,
            "type": 1,
            "options": built,
        }
        if command and command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        if resolved:
            data["resolved"] = resolved
        return await self._deliver(
            interaction_type=2,
            data=data,
            member=member,
            attachment_size_limit=attachment_size_limit,
            channel_id=channel.id if channel is not None else None,
        )

    async def autocomplete(
        self, name: str, options: Mapping[str, Any], *, focused: str, member: FakeMember
    ) -> FakeInteraction:
        built = []
        for option_name, value in options.items():
            option = {"name": option_name, "type": 3, "value": value}
            if option_name == focused:
                option["focused"] = True
            built.append(option)
        data = {"id": self.snowflake(), "name": name, "type": 1, "options": built}
        command = self._synced_command(name)
        if command and command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return await self._deliver(interaction_type=4, data=data, member=member)

    async def click(
        self,
        message: FakeMessage,
        label: str,
        *,
        member: FakeMember,
        attachment_size_limit: int | None = None,
    ) -> FakeInteraction:
        """Click the button labelled ``label`` (prefix match) on ``message``."""
        if message.deleted:
            raise AssertionError(f"message {message.id} was deleted; nobody can click on it")
        button = message.button(label)
        if "custom_id" not in button:
            raise AssertionError(f"button {label!r} has no custom_id")
        data = {"custom_id": button["custom_id"], "component_type": 2}
        return await self._deliver(
            interaction_type=3,
            data=data,
            member=member,
            message=message,
            attachment_size_limit=attachment_size_limit,
            channel_id=message.channel_id,
        )

    def _option(
        self,
        name: str,
        value: Any,
        roles: set[str],
        resolved: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        if isinstance(value, FakeChannel):
            resolved.setdefault("channels", {})[value.id] = {
                **self._channel_payload(value.id),
                "permissions": str(ALL_PERMISSIONS),
            }
            return {"name": name, "type": 7, "value": value.id}
        if isinstance(value, FakeMember):
            resolved.setdefault("users", {})[value.id] = value.user_payload()
            resolved.setdefault("members", {})[value.id] = value.member_payload(with_user=False)
            return {"name": name, "type": 6, "value": value.id}
        if isinstance(value, FakeUser):
            resolved.setdefault("users", {})[value.id] = value.user_payload()
            return {"name": name, "type": 6, "value": value.id}
        if isinstance(value, str) and (value in roles or value in self.roles):
            resolved.setdefault("roles", {})[value] = self.roles.get(value) or self._role_payload(
                value
            )
            return {"name": name, "type": 8, "value": value}
        if isinstance(value, bool):
            return {"name": name, "type": 5, "value": value}
        if isinstance(value, int):
            return {"name": name, "type": 4, "value": value}
        if isinstance(value, float):
            return {"name": name, "type": 10, "value": value}
        return {"name": name, "type": 3, "value": str(value)}

    def _role_payload(self, role_id: str) -> dict[str, Any]:
        return {
            "id": role_id,
            "name": f"role{role_id[-4:]}",
            "color": 0,
            "hoist": False,
            "position": 1,
            "permissions": str(MEMBER_PERMISSIONS),
            "managed": False,
            "mentionable": True,
            "flags": 0,
        }

    def _synced_command(self, name: str) -> dict[str, Any] | None:
        for sync in reversed(self.command_syncs):
            for command in sync.commands:
                if command["name"] == name:
                    return command
        return None

    def _channel_payload(self, channel_id: str | None = None) -> dict[str, Any]:
        extra = self.extra_channels.get(channel_id or "")
        return {
            "id": extra.id if extra else self.channel_id,
            "type": 0,
            "name": extra.name if extra else self.channel_name,
            "position": 1 if extra else 0,
            "guild_id": self.guild_id,
            "permission_overwrites": [],
            "nsfw": extra.nsfw if extra else False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }

    async def _deliver(
        self,
        *,
        interaction_type: int,
        data: dict[str, Any],
        member: FakeMember,
        message: FakeMessage | None = None,
        attachment_size_limit: int | None = None,
        channel_id: str | None = None,
    ) -> FakeInteraction:
        channel_id = channel_id or self.channel_id
        interaction_id = self.snowflake()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        limit = attachment_size_limit or self.attachment_size_limit
        payload: dict[str, Any] = {
            "id": interaction_id,
            "application_id": self.application_id,
            "type": interaction_type,
            "token": token,
            "version": 1,
            "guild_id": self.guild_id,
            "guild": {"id": self.guild_id, "locale": "en-US", "features": []},
            "channel_id": channel_id,
            "channel": self._channel_payload(channel_id),
            "app_permissions": str(MEMBER_PERMISSIONS),
            "attachment_size_limit": limit,
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": self.guild_id},
            "context": 0,
            "member": member.member_payload(),
            "data": data,
        }
        if message is not None:
            payload["message"] = self._message_payload(message)
        interaction = FakeInteraction(
            id=interaction_id,
            token=token,
            type=interaction_type,
            payload=payload,
            member=member,
            attachment_size_limit=limit,
        )
        self.interactions[interaction_id] = interaction
        if message is not None:
            interaction.original_id = message.id
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    # -- gateway ----------------------------------------------------------------------------

    @property
    def sessions(self) -> int:
        """Gateway sessions identified and still open."""
        return sum(not ws.closed for ws in self._sessions)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send ``event`` to every open session."""
        async with self._ws_lock:
            open_sessions = [ws for ws in self._sessions if not ws.closed]
            if not open_sessions:
                raise AssertionError("the bot is not connected to the fake gateway")
            for ws in open_sessions:
                self._sessions[ws] += 1
                frame = {"op": 0, "t": event, "s": self._sessions[ws], "d": data}
                with contextlib.suppress(ConnectionError):
                    await ws.send_str(json.dumps(frame))

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return self._error_response(request, DiscordAPIError(404, 0, "404: Not Found"))
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self._sockets.add(ws)
        self._record(request, 101)
        try:
            await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                await self._gateway_message(ws, json.loads(message.data))
        finally:
            self._sockets.discard(ws)
            self._sessions.pop(ws, None)
            await self._notify()
        return ws

    async def _gateway_message(self, ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == 1:
            self.heartbeats += 1
            await ws.send_str(json.dumps({"op": 11}))
        elif op == 2:
            identify = message["d"]
            self.identifies.append(identify)
            if identify.get("token") != self.token:
                await ws.close(code=4004, message=b"Authentication failed.")
                return
            await self._send_ready(ws, identify)
        elif op == 6:
            # No session survives in the fake: tell the client to identify afresh.
            await ws.send_str(json.dumps({"op": 9, "d": False}))
        await self._notify()

    async def _send_ready(self, ws: web.WebSocketResponse, identify: dict[str, Any]) -> None:
        async with self._ws_lock:
            self._sessions[ws] = 1
            ready = {
                "v": 10,
                "user": {**self._bot_user(), "bot": True},
                "guilds": [{"id": self.guild_id, "unavailable": True}],
                "session_id": secrets.token_hex(16),
                "resume_gateway_url": self.gateway_url,
                "application": {"id": self.application_id, "flags": 0},
                "private_channels": [],
                "relationships": [],
            }
            await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": 1, "d": ready}))
            if int(identify.get("intents", 0)) & GUILDS_INTENT:
                self._sessions[ws] = 2
                await ws.send_str(
                    json.dumps({"op": 0, "t": "GUILD_CREATE", "s": 2, "d": self._guild_payload()})
                )
        self.ready_sent += 1

    def _guild_payload(self) -> dict[str, Any]:
        return {
            "id": self.guild_id,
            "name": "Fake Server",
            "icon": None,
            "owner_id": self.owner_id,
            "unavailable": False,
            "member_count": 2,
            "large": False,
            "features": [],
            "roles": [
                {**self._role_payload(self.guild_id), "name": "@everyone", "position": 0},
                *self.roles.values(),
            ],
            "channels": [
                self._channel_payload(),
                *(self._channel_payload(c) for c in self.extra_channels),
            ],
            "threads": [],
            "members": [],
            "voice_states": [],
            "presences": [],
            "emojis": [],
            "stickers": [],
            "preferred_locale": "en-US",
            "premium_tier": 0,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "system_channel_flags": 0,
            "afk_timeout": 300,
            "joined_at": "2024-01-01T00:00:00.000000+00:00",
        }

    def _bot_user(self) -> dict[str, Any]:
        return {
            "id": self.bot_user_id,
            "username": "imagine-bot",
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "flags": 0,
            "mfa_enabled": False,
            "verified": True,
        }

    # -- REST -----------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if not path.startswith("/api/v10/"):
            if path.startswith("/attachments/"):
                return self._serve_attachment(request)
            return self._error_response(request, DiscordAPIError(404, 0, "404: Not Found"))
        route = path[len("/api/v10") :]
        for index, (method, fragment, retry_after) in enumerate(self._rate_limits):
            if request.method == method and fragment in path:
                del self._rate_limits[index]
                return await self._rate_limited(request, retry_after)
        for index, (method, fragment, with_files, status, code, text) in enumerate(
            self._rejections
        ):
            multipart = request.headers.get("Content-Type", "").startswith("multipart/")
            if request.method == method and fragment in path and (multipart or not with_files):
                del self._rejections[index]
                await request.read()
                return self._error_response(request, DiscordAPIError(status, code, text))
        try:
            body = await self._route(request, route)
        except DiscordAPIError as err:
            response = self._error_response(request, err)
            await self._notify()
            return response
        self._record(request, 200 if body is not None else 204)
        await self._notify()
        if body is None:
            return web.Response(status=204, headers=self._ratelimit_headers())
        return web.Response(
            status=200,
            body=json.dumps(body).encode(),
            content_type="application/json",
            headers=self._ratelimit_headers(),
        )

    async def _rate_limited(self, request: web.Request, retry_after: float) -> web.Response:
        await request.read()
        self._record(request, 429)
        self.errors_returned.append((request.path, 429, 0))
        await self._notify()
        body = {"message": "You are being rate limited.", "retry_after": retry_after}
        return web.Response(
            status=429,
            body=json.dumps({**body, "global": False}).encode(),
            content_type="application/json",
            headers={
                **self._ratelimit_headers(),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                "X-RateLimit-Scope": "user",
                "Retry-After": str(max(1, round(retry_after))),
                "Via": "1.1 google",
            },
        )

    def _ratelimit_headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "49",
            "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
            "X-RateLimit-Reset-After": "1.000",
            "X-RateLimit-Bucket": "fake",
        }

    def _record(self, request: web.Request, status: int) -> None:
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.query), status)
        )

    def _error_response(self, request: web.Request, err: DiscordAPIError) -> web.Response:
        self._record(request, err.status)
        self.errors_returned.append((request.path, err.status, err.code))
        if err.code == 0 and err.status == 404:
            self.unhandled.append(RecordedRequest(request.method, request.path, {}, 404))
        return web.Response(
            status=err.status,
            body=json.dumps({"message": err.message, "code": err.code}).encode(),
            content_type="application/json",
        )

    def _require_bot_auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise DiscordAPIError(401, 0, "401: Unauthorized")

    async def _route(self, request: web.Request, route: str) -> Any:
        method = request.method
        parts = route.strip("/").split("/")
        if route == "/users/@me" and method == "GET":
            self._require_bot_auth(request)
            return self._bot_user()
        if route == "/oauth2/applications/@me" and method == "GET":
            self._require_bot_auth(request)
            return self._application()
        if parts[0] == "applications" and method == "PUT" and parts[-1] == "commands":
            self._require_bot_auth(request)
            return await self._sync_commands(request, parts)
        if parts[0] == "interactions" and len(parts) == 4 and parts[3] == "callback":
            if method != "POST":
                raise DiscordAPIError(405, 0, "405: Method Not Allowed")
            return await self._callback(request, parts[1], parts[2])
        if parts[0] == "webhooks" and len(parts) >= 3:
            return await self._webhook(request, parts)
        if parts[0] == "channels" and len(parts) >= 3 and parts[2] == "messages":
            self._require_bot_auth(request)
            return await self._channel_messages(request, parts)
        raise DiscordAPIError(404, 0, "404: Not Found")

    def _application(self) -> dict[str, Any]:
        owner = {"id": self.owner_id, "username": "owner", "discriminator": "0", "avatar": None}
        return {
            "id": self.application_id,
            "name": "imagine-bot",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": owner,
            "verify_key": "0" * 64,
            "flags": 0,
            "team": None,
            "summary": "",
        }

    # -- command sync -------------------------------------------------------------------

    async def _sync_commands(self, request: web.Request, parts: list[str]) -> Any:
        if parts[1] != self.application_id:
            raise DiscordAPIError(403, 50001, "Missing Access")
        guild_id: str | None = None
        if len(parts) == 5 and parts[2] == "guilds":
            guild_id = parts[3]
            if guild_id != self.guild_id:
                raise DiscordAPIError(403, 50001, "Missing Access")
        elif len(parts) != 3:
            raise DiscordAPIError(404, 0, "404: Not Found")
        commands = await request.json()
        if not isinstance(commands, list) or len(commands) > 100:
            raise DiscordAPIError(400, 50035, "Invalid Form Body")
        echoed = []
        for command in commands:
            _validate_command(command)
            permissions = command.get("default_member_permissions")
            echoed.append(
                {
                    "id": self.snowflake(),
                    "application_id": self.application_id,
                    "version": self.snowflake(),
                    "type": 1,
                    "nsfw": False,
                    **({"guild_id": guild_id} if guild_id else {}),
                    **command,
                    # Discord answers with the permission bitset as a string, whatever was sent.
                    "default_member_permissions": None if permissions is None else str(permissions),
                }
            )
        self.command_syncs.append(CommandSync(guild_id=guild_id, commands=echoed))
        return echoed

    # -- interactions ---------------------------------------------------------------------

    def _interaction(self, interaction_id: str, token: str) -> FakeInteraction:
        interaction = self.interactions.get(interaction_id)
        if interaction is None or not secrets.compare_digest(interaction.token, token):
            raise DiscordAPIError(404, 10062, "Unknown interaction")
        return interaction

    async def _callback(self, request: web.Request, interaction_id: str, token: str) -> Any:
        interaction = self._interaction(interaction_id, token)
        # Read the body first: no await may separate the "already acknowledged" check from
        # marking the interaction acknowledged, or two sessions racing to answer one
        # interaction would both win, which Discord never allows.
        body, files = await self._read_body(request)
        if interaction.acked:
            raise DiscordAPIError(400, 40060, "Interaction has already been acknowledged.")
        if interaction.token_expired or time.monotonic() - interaction.sent_at > self.ack_deadline:
            raise DiscordAPIError(404, 10062, "Unknown interaction")
        callback_type = body.get("type")
        data = body.get("data") or {}
        interaction.callbacks.append({"type": callback_type, "data": data, "files": len(files)})
        resource: dict[str, Any] | None = None
        if callback_type == 4:
            message = self._new_message(
                data, files, interaction=interaction, via="callback", limit=interaction
            )
            interaction.original_id = message.id
            resource = {"type": 4, "message": self._message_payload(message)}
        elif callback_type == 5:
            if interaction.type not in (2, 3, 5):
                raise DiscordAPIError(400, 50035, "Invalid Form Body")
            message = self._new_message(
                {"flags": LOADING | (int(data.get("flags", 0)) & EPHEMERAL)},
                {},
                interaction=interaction,
                via="callback",
                limit=interaction,
            )
            interaction.original_id = message.id
            resource = {"type": 5}
        elif callback_type in (6, 7):
            if interaction.type != 3:
                raise DiscordAPIError(400, 50035, "Invalid Form Body")
            if callback_type == 7 and interaction.original_id:
                self._edit_message(
                    self.messages[interaction.original_id], data, files, limit=interaction
                )
            resource = {"type": callback_type}
            if callback_type == 7 and interaction.original_id:
                resource["message"] = self._message_payload(self.messages[interaction.original_id])
        elif callback_type == 8:
            if interaction.type != 4:
                raise DiscordAPIError(400, 50035, "Invalid Form Body")
            resource = {"type": 8}
        else:
            raise DiscordAPIError(400, 50035, "Invalid Form Body")
        interaction.acked_at = time.monotonic()
        if request.query.get("with_response") not in ("1", "true", "True"):
            return None
        original = self.messages.get(interaction.original_id or "")
        answer: dict[str, Any] = {
            "interaction": {
                "id": interaction.id,
                "type": interaction.type,
                "response_message_id": original.id if original else None,
                "response_message_loading": bool(original and original.loading),
                "response_message_ephemeral": bool(original and original.ephemeral),
            }
        }
        if resource is not None:
            answer["resource"] = resource
        return answer

    async def _webhook(self, request: web.Request, parts: list[str]) -> Any:
        method = request.method
        application_id, token = parts[1], parts[2]
        interaction = next(
            (i for i in self.interactions.values() if secrets.compare_digest(i.token, token)),
            None,
        )
        if application_id != self.application_id or interaction is None:
            raise DiscordAPIError(404, 10015, "Unknown Webhook")
        if interaction.token_expired:
            raise DiscordAPIError(401, 50027, "Invalid Webhook Token")
        if not interaction.acked:
            raise DiscordAPIError(404, 10015, "Unknown Webhook")
        if len(parts) == 3:
            if method != "POST":
                raise DiscordAPIError(405, 0, "405: Method Not Allowed")
            return await self._followup(request, interaction)
        if len(parts) != 5 or parts[3] != "messages":
            raise DiscordAPIError(404, 0, "404: Not Found")
        message_id = interaction.original_id if parts[4] == "@original" else parts[4]
        allowed = {interaction.original_id, *interaction.followup_ids}
        message = self.messages.get(message_id or "")
        if message is None or message.deleted or message_id not in allowed:
            raise DiscordAPIError(404, 10008, "Unknown Message")
        if method == "GET":
            return self._message_payload(message)
        if method == "DELETE":
            message.deleted = True
            return None
        if method == "PATCH":
            body, files = await self._read_body(request)
            self._edit_message(message, body, files, limit=interaction)
            return self._message_payload(message)
        raise DiscordAPIError(405, 0, "405: Method Not Allowed")

    async def _followup(self, request: web.Request, interaction: FakeInteraction) -> Any:
        body, files = await self._read_body(request)
        original = self.messages.get(interaction.original_id or "")
        if (
            interaction.callback_type == 5
            and original is not None
            and original.loading
            and not original.deleted
        ):
            # The first followup after a deferred response replaces the loading message; the
            # ephemeral choice was made by the defer, so the followup's flag is ignored.
            body = {**body, "flags": original.flags & EPHEMERAL}
            self._edit_message(original, body, files, limit=interaction)
            interaction.followup_ids.append(original.id)
            return self._message_payload(original)
        message = self._new_message(
            body, files, interaction=interaction, via="followup", limit=interaction
        )
        interaction.followup_ids.append(message.id)
        return self._message_payload(message)

    # -- channel messages -------------------------------------------------------------------

    async def _channel_messages(self, request: web.Request, parts: list[str]) -> Any:
        channel_id = parts[1]
        if channel_id != self.channel_id and channel_id not in self.extra_channels:
            raise DiscordAPIError(404, 10003, "Unknown Channel")
        method = request.method
        if len(parts) == 3:
            if method != "POST":
                raise DiscordAPIError(405, 0, "405: Method Not Allowed")
            body, files = await self._read_body(request)
            created = self._new_message(
                body, files, interaction=None, via="channel", limit=None, channel_id=channel_id
            )
            return self._message_payload(created)
        message = self.messages.get(parts[3])
        if (
            len(parts) != 4
            or message is None
            or message.deleted
            or message.ephemeral
            or message.channel_id != channel_id
        ):
            raise DiscordAPIError(404, 10008, "Unknown Message")
        if method == "GET":
            return self._message_payload(message)
        if method == "DELETE":
            if message.author_id != self.bot_user_id:
                raise DiscordAPIError(403, 50013, "Missing Permissions")
            message.deleted = True
            return None
        if method == "PATCH":
            if message.author_id != self.bot_user_id:
                raise DiscordAPIError(403, 50005, "Cannot edit a message authored by another user")
            body, files = await self._read_body(request)
            self._edit_message(message, body, files, limit=None)
            return self._message_payload(message)
        raise DiscordAPIError(405, 0, "405: Method Not Allowed")

    # -- bodies, messages ---------------------------------------------------------------------

    async def _read_body(self, request: web.Request) -> tuple[dict[str, Any], dict[int, Any]]:
        """JSON body, or multipart ``payload_json`` + ``files[n]`` parts."""
        content_type = request.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            payload: dict[str, Any] = {}
            files: dict[int, Any] = {}
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                name = getattr(part, "name", None) or ""
                if name == "payload_json":
                    payload = json.loads(await part.text())  # type: ignore[union-attr]
                    continue
                match = _FILE_FIELD_RE.match(name)
                if match is None:
                    raise DiscordAPIError(400, 50035, f"Invalid Form Body: unexpected {name!r}")
                files[int(match.group(1))] = (
                    getattr(part, "filename", None),
                    bytes(await part.read()),  # type: ignore[union-attr]
                )
            return payload, files
        if content_type != "application/json":
            if not await request.read():
                return {}, {}
            raise DiscordAPIError(400, 50109, "The request body contains invalid JSON.")
        try:
            body = await request.json()
        except ValueError:
            raise DiscordAPIError(400, 50109, "The request body contains invalid JSON.") from None
        if not isinstance(body, dict):
            raise DiscordAPIError(400, 50035, "Invalid Form Body")
        return body, {}

    def _attachments(
        self,
        body: dict[str, Any],
        files: dict[int, Any],
        *,
        limit: FakeInteraction | None,
        keep: list[FakeAttachment],
    ) -> list[FakeAttachment]:
        if "attachments" not in body and not files:
            return keep
        max_bytes = limit.attachment_size_limit if limit is not None else self.attachment_size_limit
        described = body.get("attachments")
        if described is None:
            described = [{"id": index} for index in sorted(files)]
        kept_by_id = {a.id: a for a in keep}
        result: list[FakeAttachment] = []
        for item in described:
            attachment_id = item.get("id")
            if isinstance(attachment_id, str) and attachment_id in kept_by_id:
                result.append(kept_by_id[attachment_id])
                continue
            index = int(attachment_id) if attachment_id is not None else -1
            if index not in files:
                raise DiscordAPIError(400, 50035, f"Invalid Form Body: no files[{index}]")
            filename, data = files[index]
            if len(data) > max_bytes:
                raise DiscordAPIError(413, 40005, "Request entity too large")
            result.append(
                _decode_attachment(
                    self.snowflake(),
                    item.get("filename") or filename,
                    data,
                    item.get("description"),
                )
            )
        if len(result) > 10:
            raise DiscordAPIError(
                400, 30015, "Maximum number of attachments in a message reached (10)"
            )
        return result

    def _new_message(
        self,
        body: dict[str, Any],
        files: dict[int, Any],
        *,
        interaction: FakeInteraction | None,
        via: str,
        limit: FakeInteraction | None,
        channel_id: str | None = None,
    ) -> FakeMessage:
        _validate_message(body)
        if channel_id is None and interaction is not None:
            channel_id = str(interaction.payload.get("channel_id") or "")
        message = FakeMessage(
            id=self.snowflake(),
            channel_id=channel_id or self.channel_id,
            author_id=self.bot_user_id,
            content=body.get("content") or "",
            embeds=list(body.get("embeds") or []),
            components=list(body.get("components") or []),
            attachments=self._attachments(body, files, limit=limit, keep=[]),
            flags=int(body.get("flags") or 0),
            interaction_id=interaction.id if interaction else None,
            via=via,
            allowed_mentions=body.get("allowed_mentions"),
            message_type=20 if interaction is not None and interaction.type == 2 else 0,
        )
        self.messages[message.id] = message
        return message

    def _edit_message(
        self,
        message: FakeMessage,
        body: dict[str, Any],
        files: dict[int, Any],
        *,
        limit: FakeInteraction | None,
    ) -> None:
        _validate_message(body)
        if "content" in body:
            message.content = body["content"] or ""
        if "embeds" in body:
            message.embeds = list(body["embeds"] or [])
        if "components" in body:
            message.components = list(body["components"] or [])
        if "allowed_mentions" in body:
            message.allowed_mentions = body["allowed_mentions"]
        message.attachments = self._attachments(body, files, limit=limit, keep=message.attachments)
        if body.get("flags") is not None:
            # Only SUPPRESS_EMBEDS may change on an edit; the ephemeral state never does.
            message.flags = (message.flags & (EPHEMERAL | LOADING)) | (int(body["flags"]) & 4)
        message.flags &= ~LOADING
        message.edits += 1
        message.history.append(message.content)

    def _message_payload(self, message: FakeMessage) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": message.id,
            "channel_id": message.channel_id,
            "guild_id": self.guild_id,
            "type": message.message_type,
            "content": message.content,
            "author": self._bot_user(),
            "attachments": [self._attachment_payload(message, a) for a in message.attachments],
            "embeds": message.embeds,
            "components": message.components,
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": datetime.now(UTC).isoformat() if message.edits else None,
            "flags": message.flags,
        }
        if message.via != "channel":
            payload["webhook_id"] = self.application_id
            payload["application_id"] = self.application_id
        return payload

    def _attachment_payload(self, message: FakeMessage, item: FakeAttachment) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/attachments/{message.channel_id}/{item.id}/{item.filename}"
        payload: dict[str, Any] = {
            "id": item.id,
            "filename": item.filename,
            "size": item.size,
            "url": url,
            "proxy_url": url,
            "content_type": item.content_type,
        }
        if item.width is not None:
            payload["width"] = item.width
            payload["height"] = item.height
        if message.ephemeral:
            payload["ephemeral"] = True
        return payload

    def _serve_attachment(self, request: web.Request) -> web.Response:
        parts = request.path.strip("/").split("/")
        for message in self.messages.values():
            for item in message.attachments:
                if len(parts) >= 3 and item.id == parts[2]:
                    return web.Response(
                        body=item.data, content_type=item.content_type or "application/octet-stream"
                    )
        return web.Response(status=404)


def _decode_attachment(
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


def _validate_message(body: dict[str, Any]) -> None:
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


def _validate_command(command: dict[str, Any]) -> None:
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
    _validate_options(command.get("options") or [], where=name)


def _validate_options(options: list[dict[str, Any]], *, where: str) -> None:
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
            _validate_options(option.get("options") or [], where=f"{where} {name}")
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
