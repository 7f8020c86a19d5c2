"""FakeDiscord's gateway websocket: HELLO, heartbeats, IDENTIFY answered with READY (and
GUILD_CREATE for the GUILDS intent), RESUME refused, and events dispatched to every open
session of the event's shard, as Discord does for several sessions of one shard. A mixin:
the state it reads and writes is set up by ``FakeDiscord.__init__`` (``server.py``).

Sharding as Discord does it: IDENTIFY's ``shard: [id, count]`` (``[0, 1]`` when absent) must
have ``0 <= id < count`` (else close 4010 Invalid shard) and ``count`` at least
``required_shards`` (else 4011 Sharding required). A session gets READY with its ``shard``,
the servers of its shard only, and a server's events only when the server is on its shard:
``(guild_id >> 22) % count == id``. Events without a server (DMs) go to shard 0."""

from __future__ import annotations

import contextlib
import json
import secrets
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.discord.payload import (
    GUILDS_INTENT,
    DiscordAPIError,
    FakeGuild,
    shard_of,
)

INVALID_SHARD = 4010
SHARDING_REQUIRED = 4011

__all__ = ["Gateway"]


class Gateway:
    """The gateway half of ``FakeDiscord``."""

    @property
    def sessions(self) -> int:
        """Gateway sessions identified and still open."""
        return sum(not ws.closed for ws in self._sessions)

    @property
    def shards(self) -> list[tuple[int, int]]:
        """``(shard id, shard count)`` of each open identified session."""
        return [self._shards[ws] for ws in self._sessions if not ws.closed and ws in self._shards]

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send ``event`` to every open session of the shard its ``guild_id`` is on."""
        guild_id = data.get("guild_id")
        async with self._ws_lock:
            open_sessions = [
                ws
                for ws in self._sessions
                if not ws.closed and self._on_shard(self._shards.get(ws, (0, 1)), guild_id)
            ]
            if not open_sessions:
                raise AssertionError(
                    f"no session of {guild_id or 'a DM'}'s shard is connected to the fake gateway"
                )
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
            self._shards.pop(ws, None)
            await self._notify()
        return ws

    @staticmethod
    def _on_shard(shard: tuple[int, int], guild_id: object) -> bool:
        shard_id, count = shard
        if guild_id is None:
            return shard_id == 0
        return shard_of(str(guild_id), count) == shard_id

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
            shard = self._shard(identify.get("shard", [0, 1]))
            if shard is None:
                await ws.close(code=INVALID_SHARD, message=b"Invalid shard.")
                return
            if shard[1] < self.required_shards:
                await ws.close(code=SHARDING_REQUIRED, message=b"Sharding required.")
                return
            gate = self._ready_gates.get(shard[0])
            if gate is not None:
                await self._notify()  # the IDENTIFY is seen while READY is held back
                await gate.wait()
            await self._send_ready(ws, identify, shard)
        elif op == 6:
            # No session survives in the fake: tell the client to identify afresh.
            await ws.send_str(json.dumps({"op": 9, "d": False}))
        await self._notify()

    @staticmethod
    def _shard(value: object) -> tuple[int, int] | None:
        """IDENTIFY's ``shard`` if Discord would accept it."""
        if not isinstance(value, list) or len(value) != 2:
            return None
        shard_id, count = value
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
            return None
        if count < 1 or not 0 <= shard_id < count:
            return None
        return shard_id, count

    async def _send_ready(
        self, ws: web.WebSocketResponse, identify: dict[str, Any], shard: tuple[int, int]
    ) -> None:
        guilds = [g for g in self.guilds.values() if self._on_shard(shard, g.id)]
        async with self._ws_lock:
            self._sessions[ws] = 1
            self._shards[ws] = shard
            ready = {
                "v": 10,
                "user": {**self._bot_user(), "bot": True},
                "guilds": [{"id": g.id, "unavailable": True} for g in guilds],
                "shard": list(shard),
                "session_id": secrets.token_hex(16),
                "resume_gateway_url": self.gateway_url,
                "application": {"id": self.application_id, "flags": 0},
                "private_channels": [],
                "relationships": [],
            }
            await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": 1, "d": ready}))
            if int(identify.get("intents", 0)) & GUILDS_INTENT:
                for guild in guilds:
                    self._sessions[ws] += 1
                    frame = {
                        "op": 0,
                        "t": "GUILD_CREATE",
                        "s": self._sessions[ws],
                        "d": self._guild_payload(guild),
                    }
                    await ws.send_str(json.dumps(frame))
                    self.guild_creates.append((shard, guild.id))
        self.ready_sent += 1

    def _guild_payload(self, guild: FakeGuild) -> dict[str, Any]:
        default = guild.id == self.guild_id
        channels = [self._channel_payload(guild.channel_id)]
        if default:
            channels += [self._channel_payload(c) for c in self.extra_channels]
        return {
            "id": guild.id,
            "name": guild.name,
            "icon": None,
            "owner_id": self.owner_id,
            "unavailable": False,
            "member_count": 2,
            "large": False,
            "features": [],
            "roles": [
                {**self._role_payload(guild.id), "name": "@everyone", "position": 0},
                *(self.roles.values() if default else ()),
            ],
            "channels": channels,
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
