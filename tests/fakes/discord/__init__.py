"""A loopback fake Discord for end-to-end tests: the REST routes a bot uses and a gateway
websocket, on 127.0.0.1 with a free port, speaking the wire format discord.py 2.7 expects.
The package: ``payload`` (constants, records, body checks), ``gateway``, ``rest``,
``interaction`` and ``server`` (``FakeDiscord``, which combines them).

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
- every identified gateway session of an event's shard receives the event, as Discord does
  for several sessions of one shard (two copies of a bot both see each interaction; the first
  to acknowledge it answers, the other gets 40060); a server's shard is
  ``(guild_id >> 22) % shard_count``, and a session gets READY and GUILD_CREATE for its
  shard's servers only;
- ``GET /gateway/bot`` recommends ``recommended_shards``; IDENTIFY with a bad ``shard`` is
  closed with 4010 (Invalid shard), with fewer than ``required_shards`` with 4011 (Sharding
  required).
"""

from __future__ import annotations

from tests.fakes.discord.payload import (
    ADMINISTRATOR,
    DISCORD_EPOCH_MS,
    EPHEMERAL,
    LOADING,
    MANAGE_GUILD,
    MEMBER_PERMISSIONS,
    PRIVILEGED_INTENTS,
    CommandSync,
    DiscordAPIError,
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeMessage,
    FakeUser,
    RecordedRequest,
    snowflake_time,
)
from tests.fakes.discord.server import FakeDiscord

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
    "FakeGuild",
    "FakeInteraction",
    "FakeMember",
    "FakeMessage",
    "FakeUser",
    "RecordedRequest",
    "snowflake_time",
]
