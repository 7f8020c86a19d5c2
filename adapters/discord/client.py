"""The discord.py client: intents, the command tree with its one error hook, start-up
(``setup_hook``: commands, lasting buttons, command sync) and ``run_client``.

``ImagineClient`` is the one ``DiscordContext`` and the only module that knows every feature:
it adds the commands and maps each button to what its click does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands

from adapters.discord import moderation, progress, result
from adapters.discord.admin import build_admin_group
from adapters.discord.button import Button, CancelButton, JobButton, ReviewButton
from adapters.discord.commands import add_commands
from adapters.discord.config import DiscordSettings
from adapters.discord.context import ButtonAction
from adapters.discord.courier import DiscordCourier
from adapters.discord.identify import IdentifyPacer
from adapters.discord.moderation_admin import add_moderation_commands
from adapters.discord.notice import tell_interrupted
from adapters.discord.render import PLATFORM, accepting
from adapters.discord.reply import Reply
from adapters.notice import relay_notices
from adapters.runtime import Runtime
from bot.errors import BotError, ConfigError, InvalidRequestError
from bot.health import CONNECTED, DISCONNECTED, STARTING
from bot.messages import (
    TEMPORARILY_UNAVAILABLE,
    describe,
    option_refused_text,
    unreachable_text,
)
from bot.store.ledger import Interrupted

__all__ = [
    "INVALID_SHARD",
    "SHARDING_REQUIRED",
    "ImagineClient",
    "ImagineTree",
    "apply_endpoints",
    "intents",
    "run_client",
]

log = logging.getLogger(__name__)

# Gateway close codes that no reconnect can fix: the shard settings are wrong.
INVALID_SHARD = 4010
SHARDING_REQUIRED = 4011

BUTTONS: tuple[type[Button], ...] = (JobButton, CancelButton, ReviewButton)

# What a click on each button does, by ``Button.name``.
BUTTON_ACTIONS: dict[str, ButtonAction] = {
    "imagine:reroll": result.reroll,
    "imagine:vary": result.vary,
    "imagine:details": result.details,
    "imagine:delete": result.delete,
    "imagine:retry": result.retry,
    "imagine:cancel": progress.cancel,
    "imagine-review:ask": moderation.ask,
    "imagine-review:approve": moderation.approve,
    "imagine-review:deny": moderation.deny,
}
if {name for button in BUTTONS for name in button.names()} != BUTTON_ACTIONS.keys():
    raise RuntimeError("every button needs its action in BUTTON_ACTIONS, and only those")


def intents() -> discord.Intents:
    """Slash commands and buttons need no intent at all; ``guilds`` keeps the server, channel
    and role caches (role quotas) current. Nothing privileged."""
    chosen = discord.Intents.none()
    chosen.guilds = True
    return chosen


def apply_endpoints(settings: DiscordSettings) -> None:
    """Point discord.py at ``DISCORD_API_BASE_URL`` and ``DISCORD_GATEWAY_URL``. Both are
    class attributes read when a request or connection is made, so this runs before login."""
    discord.http.Route.BASE = settings.api_base_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


async def _check_gateway(url: str) -> None:
    """One TCP connection to the gateway before discord.py's connect loop, which would retry
    an unreachable gateway forever with a traceback each time."""
    parsed = yarl.URL(url)
    host, port = parsed.host, parsed.port or (443 if parsed.scheme == "wss" else 80)
    try:
        async with asyncio.timeout(10):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(
            unreachable_text("the Discord gateway", url, exc, "DISCORD_GATEWAY_URL")
        ) from None
    writer.close()
    await writer.wait_closed()


class ImagineTree(app_commands.CommandTree["ImagineClient"]):
    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return accepting(interaction)

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        if isinstance(error, app_commands.CommandInvokeError):
            await self.report_unexpected(interaction, error.original)
        elif isinstance(error, app_commands.TransformerError):
            # A value discord.py could not convert (a user who left the server, say); its own
            # text shows Python reprs, so say in words what the option wants.
            log.info("interaction %s: a %s option was refused", interaction.id, error.type.name)
            await _tell(interaction, option_refused_text(error.type.name))
        elif isinstance(error, app_commands.CheckFailure):
            log.info("interaction %s refused: %s", interaction.id, type(error).__name__)
            await _tell(interaction, describe(InvalidRequestError(str(error))))
        else:
            await self.report_unexpected(interaction, error)

    async def report_unexpected(
        self, interaction: discord.Interaction, error: BaseException
    ) -> None:
        """The one place unexpected failures of commands and buttons end up: logged in full,
        and the user is told the service is temporarily unavailable."""
        if interaction.command is not None:
            where = "/" + interaction.command.qualified_name
        else:
            where = interaction.custom_id or "an interaction"
        log.error(
            "unexpected error in %s (interaction %s, user %s)",
            where,
            interaction.id,
            interaction.user.id,
            exc_info=error,
        )
        reply = interaction.extras.get("reply")
        try:
            if isinstance(reply, Reply):
                await reply.fail(error, logged=True)
            else:
                text = describe(error) if isinstance(error, BotError) else TEMPORARILY_UNAVAILABLE
                await _tell(interaction, text)
        except discord.HTTPException as exc:
            log.warning("interaction %s: could not report the error: %s", interaction.id, exc)


async def _tell(interaction: discord.Interaction, text: str) -> None:
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)


class ImagineClient(discord.AutoShardedClient):
    """Always the sharded client: one shard or several, in this process or split across
    processes (``DISCORD_SHARD_COUNT``, ``DISCORD_SHARD_IDS``), the code is the same."""

    def __init__(self, *, runtime: Runtime, settings: DiscordSettings, **options: Any) -> None:
        if settings.shard_ids:
            options["shard_ids"] = list(settings.shard_ids)
        super().__init__(
            shard_count=settings.shard_count,
            intents=intents(),
            allowed_mentions=discord.AllowedMentions.none(),
            max_messages=None,
            chunk_guilds_at_startup=False,
            member_cache_flags=discord.MemberCacheFlags.none(),
            **options,
        )
        self.runtime = runtime
        self.settings = settings
        self.tree = ImagineTree(self)
        self._notices: asyncio.Task[None] | None = None
        self.pacer = IdentifyPacer()
        self._shards_up: set[int] = set()
        self._ever_up = False

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        await self.pacer.wait(shard_id)

    async def plan_shards(self) -> None:
        """Ask Discord (``GET /gateway/bot``) how fast shards may identify and, unless
        ``DISCORD_SHARD_COUNT`` says, how many it recommends. Setting the count here, rather
        than leaving it to discord.py, keeps ``DISCORD_GATEWAY_URL`` in use: discord.py would
        connect to the URL Discord's answer names."""
        shards, _url, limit = await self.http.get_bot_gateway()
        self.pacer.max_concurrency = max(1, int(limit.get("max_concurrency", 1)))
        if self.shard_count is None:
            self.shard_count = int(shards)
            log.info("Discord recommends %d shard(s); running all of them here", shards)
        else:
            log.info(
                "running Discord shard(s) %s of %d",
                ", ".join(map(str, self.own_shards)),
                self.shard_count,
            )

    @property
    def own_shards(self) -> list[int]:
        """The shards this process runs (known once ``plan_shards`` has run)."""
        return list(self.shard_ids or range(self.shard_count or 1))

    async def setup_hook(self) -> None:
        add_commands(self.tree, self)
        admin = build_admin_group(self)
        add_moderation_commands(admin, self)  # block, review-channel, channels, spoilers, log
        self.tree.add_command(admin)
        self.add_dynamic_items(*BUTTONS)
        await self.sync_commands()
        # Jobs another process accepted can be delivered from here (REST, from their reach).
        self.runtime.service.add_courier(PLATFORM, DiscordCourier(self, self.runtime))
        # Members whose job a restart interrupted (REST only: no need to wait for the gateway).
        self._notices = asyncio.create_task(
            relay_notices(self.runtime.service, "discord", self._tell_interrupted),
            name="discord-notices",
        )

    def button_action(self, name: str) -> ButtonAction:
        return BUTTON_ACTIONS[name]

    async def report_unexpected(
        self, interaction: discord.Interaction, error: BaseException
    ) -> None:
        await self.tree.report_unexpected(interaction, error)

    async def _tell_interrupted(self, notice: Interrupted) -> bool:
        return await tell_interrupted(self, notice)

    async def close(self) -> None:
        task, self._notices = self._notices, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await super().close()

    async def sync_commands(self) -> None:
        """To each ``DISCORD_GUILD_IDS`` server (instant), else globally (Discord may take a
        while to show new global commands)."""
        if not self.settings.guild_ids:
            synced = await self.tree.sync()
            log.info("synced %d command(s) globally", len(synced))
            return
        for guild_id in self.settings.guild_ids:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            try:
                synced = await self.tree.sync(guild=guild)
            except discord.Forbidden:
                log.error(
                    "could not register the commands in server %s: invite the bot there with "
                    "the applications.commands scope, or fix DISCORD_GUILD_IDS",
                    guild_id,
                )
                continue
            log.info("synced %d command(s) to server %s", len(synced), guild_id)

    async def on_ready(self) -> None:
        user = self.user
        log.info(
            "connected to Discord as %s (%s) in %d server(s)",
            user,
            user.id if user else "?",
            len(self.guilds),
        )

    async def on_shard_ready(self, shard_id: int) -> None:
        log.info("Discord shard %d: its servers have streamed in", shard_id)

    # Each shard's gateway session, for /healthz (discord.py reconnects on its own). The
    # process is up only while every one of its shards is: a missing shard's servers would
    # get no answer. "shard_connect" is dispatched on READY, "shard_ready" seconds later.
    async def on_shard_connect(self, shard_id: int) -> None:
        self._shard_state(shard_id, up=True)

    async def on_shard_resumed(self, shard_id: int) -> None:
        self._shard_state(shard_id, up=True)

    async def on_shard_disconnect(self, shard_id: int) -> None:
        self._shard_state(shard_id, up=False)

    def _shard_state(self, shard_id: int, *, up: bool) -> None:
        if up and shard_id not in self._shards_up:
            log.info("Discord shard %d of %d connected", shard_id, self.shard_count or 1)
            self._shards_up.add(shard_id)
        elif not up and shard_id in self._shards_up:
            log.warning("Discord shard %d disconnected; discord.py reconnects it", shard_id)
            self._shards_up.discard(shard_id)
        if self._shards_up >= set(self.own_shards):
            self._ever_up = True
            state = CONNECTED
        else:
            state = DISCONNECTED if self._ever_up else STARTING
        self.runtime.health.set("discord", state)


async def run_client(runtime: Runtime, settings: DiscordSettings) -> None:
    """Log in, sync commands and serve until cancelled; the client is closed on the way out."""
    if settings.token is None:
        raise ConfigError("DISCORD_TOKEN is not set")
    apply_endpoints(settings)
    # No voice here: skip the start-up warnings about PyNaCl and davey.
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False
    client = ImagineClient(runtime=runtime, settings=settings)
    async with client:
        try:
            await client.login(settings.token.get_secret_value())
            await client.plan_shards()
            await _check_gateway(settings.gateway_url)
            await client.connect()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # Only the login's REST call lets these out (connect retries them): no network or
            # a wrong DISCORD_API_BASE_URL. One line, as for Slack, not discord.py's traceback.
            raise ConfigError(
                unreachable_text("Discord", settings.api_base_url, exc, "DISCORD_API_BASE_URL")
            ) from None
        except discord.LoginFailure:
            raise ConfigError(
                "Discord rejected DISCORD_TOKEN: copy the bot token again from the Developer "
                "Portal (Bot > Reset Token)"
            ) from None
        except discord.GatewayNotFound as exc:
            # GET /gateway/bot failed: a wrong DISCORD_API_BASE_URL (a proxy that lacks it).
            cause = exc.__cause__ or exc
            raise ConfigError(
                unreachable_text("Discord", settings.api_base_url, cause, "DISCORD_API_BASE_URL")
            ) from None
        except discord.ConnectionClosed as exc:
            text = _shard_refusal(exc, client)
            if text is None:
                raise
            raise ConfigError(text) from None
        except discord.PrivilegedIntentsRequired:  # pragma: no cover - none are requested
            raise ConfigError("Discord refused the gateway intents") from None


def _shard_refusal(exc: discord.ConnectionClosed, client: ImagineClient) -> str | None:
    """What to change when Discord closed a session over its shard settings."""
    count = client.shard_count or 1
    if exc.code == INVALID_SHARD:
        return (
            f"Discord refused shard {exc.shard_id} of {count} (invalid shard): check "
            "DISCORD_SHARD_IDS and DISCORD_SHARD_COUNT"
        )
    if exc.code == SHARDING_REQUIRED:
        return (
            f"Discord requires more than {count} shard(s) for this bot's servers (sharding "
            "required): raise DISCORD_SHARD_COUNT, or unset it and DISCORD_SHARD_IDS to let "
            "Discord choose"
        )
    return None
