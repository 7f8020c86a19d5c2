"""FakeDiscord's gateway websocket: HELLO, heartbeats, IDENTIFY answered with READY (and
GUILD_CREATE for the GUILDS intent), RESUME refused, and events dispatched to every open
session, as Discord does for several sessions of one shard. A mixin: the state it reads and
writes is set up by ``FakeDiscord.__init__`` (``server.py``)."""

from __future__ import annotations

import contextlib
import json
import secrets
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.discord.payload import (
    GUILDS_INTENT,
    DiscordAPIError,
)

__all__ = ["Gateway"]


class Gateway:
    """The gateway half of ``FakeDiscord``."""

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
