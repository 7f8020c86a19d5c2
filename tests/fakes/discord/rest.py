"""FakeDiscord's REST API: routing, Discord's rate-limit and error answers, the bot's own user
and application, command sync, channel messages, and the message bodies (JSON or multipart
with files) every route that writes a message shares. A mixin: the state it reads and writes
is set up by ``FakeDiscord.__init__`` (``server.py``)."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakes.discord.payload import (
    EPHEMERAL,
    LOADING,
    CommandSync,
    DiscordAPIError,
    FakeAttachment,
    FakeInteraction,
    FakeMessage,
    RecordedRequest,
    decode_attachment,
    validate_command,
    validate_message,
)

__all__ = ["Rest"]

_FILE_FIELD_RE = re.compile(r"^files\[(\d+)\]$")


class Rest:
    """The REST half of ``FakeDiscord``."""

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
        if route == "/gateway/bot" and method == "GET":
            self._require_bot_auth(request)
            return self._gateway_bot()
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

    def _gateway_bot(self) -> dict[str, Any]:
        return {
            "url": self.gateway_url,
            "shards": self.recommended_shards,
            "session_start_limit": {
                "total": 1000,
                "remaining": 1000 - len(self.identifies),
                "reset_after": 86_400_000,
                "max_concurrency": self.max_concurrency,
            },
        }

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
            if guild_id not in self.guilds:
                raise DiscordAPIError(403, 50001, "Missing Access")
        elif len(parts) != 3:
            raise DiscordAPIError(404, 0, "404: Not Found")
        commands = await request.json()
        if not isinstance(commands, list) or len(commands) > 100:
            raise DiscordAPIError(400, 50035, "Invalid Form Body")
        echoed = []
        for command in commands:
            validate_command(command)
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
                decode_attachment(
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
        validate_message(body)
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
        validate_message(body)
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
            "guild_id": self._guild_of(message.channel_id).id,
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
