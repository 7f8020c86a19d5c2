"""FakeDiscord's interactions: what a test injects (slash commands, autocomplete, button
clicks, delivered as INTERACTION_CREATE) and the endpoints a bot answers them on (the
callback, once and within the deadline; the webhook for followups and the original message,
while the token lives). A mixin: the state it reads and writes is set up by
``FakeDiscord.__init__`` (``server.py``)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from tests.fakes.discord.payload import (
    ALL_PERMISSIONS,
    EPHEMERAL,
    LOADING,
    MEMBER_PERMISSIONS,
    DiscordAPIError,
    FakeChannel,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeMessage,
    FakeUser,
)

__all__ = ["Interactions"]


class Interactions:
    """The interaction half of ``FakeDiscord``."""

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
        guild: FakeGuild | None = None,
    ) -> FakeInteraction:
        """Deliver a slash command (type 2) as Discord would for a guild command, in
        ``guild``'s channel (default: the default server's). ``options`` maps option names
        to values; a ``FakeMember`` value becomes a USER option with its resolved data, a
        value in ``resolved_roles`` a ROLE option."""
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
        guild_id = guild.id if guild is not None else self.guild_id
        command = self._synced_command(name, guild_id)
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
            guild_id=guild_id,
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

    def _synced_command(self, name: str, guild_id: str | None = None) -> dict[str, Any] | None:
        """The command as last synced to ``guild_id`` (any server when ``None``) or
        globally."""
        for sync in reversed(self.command_syncs):
            if guild_id is not None and sync.guild_id not in (guild_id, None):
                continue
            for command in sync.commands:
                if command["name"] == name:
                    return command
        return None

    def _guild_of(self, channel_id: str | None) -> FakeGuild:
        """The server a channel is in: another server's own channel, else the default."""
        for guild in self.guilds.values():
            if guild.channel_id == channel_id:
                return guild
        return self.guilds[self.guild_id]

    def _channel_payload(self, channel_id: str | None = None) -> dict[str, Any]:
        extra = self.extra_channels.get(channel_id or "")
        guild = self._guild_of(channel_id)
        return {
            "id": extra.id if extra else guild.channel_id,
            "type": 0,
            "name": extra.name if extra else self.channel_name,
            "position": 1 if extra else 0,
            "guild_id": guild.id,
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
        guild_id: str | None = None,
    ) -> FakeInteraction:
        guild = self.guilds[guild_id] if guild_id else self._guild_of(channel_id)
        channel_id = channel_id or guild.channel_id
        interaction_id = self.snowflake()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        limit = attachment_size_limit or self.attachment_size_limit
        payload: dict[str, Any] = {
            "id": interaction_id,
            "application_id": self.application_id,
            "type": interaction_type,
            "token": token,
            "version": 1,
            "guild_id": guild.id,
            "guild": {"id": guild.id, "locale": "en-US", "features": []},
            "channel_id": channel_id,
            "channel": self._channel_payload(channel_id),
            "app_permissions": str(MEMBER_PERMISSIONS),
            "attachment_size_limit": limit,
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": guild.id},
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
