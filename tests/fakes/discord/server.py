"""The fake Discord itself: ``FakeDiscord`` holds what the bot sent and what a test set up,
starts the server (the gateway at ``/``, REST under ``/api/v10``), and offers the waits
tests use. The protocol lives in the mixins: ``gateway``, ``rest`` and ``interaction``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from tests.fakes.discord.gateway import Gateway
from tests.fakes.discord.interaction import Interactions
from tests.fakes.discord.payload import (
    ALL_PERMISSIONS,
    DEFAULT_ATTACHMENT_LIMIT,
    DISCORD_EPOCH_MS,
    MANAGE_GUILD,
    MEMBER_PERMISSIONS,
    CommandSync,
    FakeChannel,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeMessage,
    RecordedRequest,
)
from tests.fakes.discord.rest import Rest
from tests.fakes.loopback import serve_loopback
from tests.fakes.observer import Observed

__all__ = ["FakeDiscord"]


class FakeDiscord(Gateway, Rest, Interactions, Observed):
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
        self.guilds: dict[str, FakeGuild] = {
            self.guild_id: FakeGuild(self.guild_id, "Fake Server", self.channel_id)
        }
        # Sharding, as GET /gateway/bot tells it and IDENTIFY is held to: the count Discord
        # recommends, the fewest it accepts (4011 below), identifies allowed per 5 s.
        self.recommended_shards = 1
        self.required_shards = 1
        self.max_concurrency = 1

        self.requests: list[RecordedRequest] = []
        self.unhandled: list[RecordedRequest] = []
        self.identifies: list[dict[str, Any]] = []
        # (shard id, shard count) of each GUILD_CREATE sent, and the guild.
        self.guild_creates: list[tuple[tuple[int, int], str]] = []
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
        self._shards: dict[web.WebSocketResponse, tuple[int, int]] = {}
        self._ready_gates: dict[int, asyncio.Event] = {}
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
            env["DISCORD_GUILD_IDS"] = ",".join(self.guilds)
        return env

    # -- servers and shards ---------------------------------------------------------------

    def add_guild(
        self, name: str | None = None, *, shard: tuple[int, int] | None = None
    ) -> FakeGuild:
        """Another server the bot is in, with one text channel (add it before the bot
        connects). ``shard=(id, count)`` picks an id whose events go to that shard."""
        guild_id = self.snowflake()
        if shard is not None:
            # The shard is the snowflake's timestamp modulo the count: step it back to fit.
            shard_id, count = shard
            ms = int(guild_id) >> 22
            ms -= (ms - shard_id) % count
            guild_id = str((ms << 22) | (int(guild_id) & ((1 << 22) - 1)))
        guild = FakeGuild(guild_id, name or f"Server {guild_id[-4:]}", self.snowflake())
        self.guilds[guild_id] = guild
        return guild

    def hold_ready(self, shard_id: int) -> None:
        """Answer the next IDENTIFY of ``shard_id`` only once ``release_ready`` is called."""
        self._ready_gates[shard_id] = asyncio.Event()

    def release_ready(self, shard_id: int) -> None:
        gate = self._ready_gates.pop(shard_id, None)
        if gate is not None:
            gate.set()

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
