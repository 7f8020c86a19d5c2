"""Event keys: the idempotency key under which the ledger holds a job, one per platform event.

A platform redelivers an event it thinks was lost (Slack retries an unacknowledged envelope,
Discord gives an interaction to every session of the bot); the ledger refuses a second hold
under the same key, so a redelivered event never charges twice. Keys of different origins must
never collide, so each origin has its namespace:

- a Discord interaction: its snowflake id, bare (the first keys ever stored had no prefix, and
  a snowflake never contains a colon);
- a Slack event, command or action: ``slack:<id>``;
- an admin's approval running a refused job: ``review:<review id>``;
- the one rerun of a job a restart interrupted: the original key + ``#again``.
"""

from __future__ import annotations

__all__ = ["AGAIN", "again", "platform_event", "review_run"]

AGAIN = "#again"


def platform_event(platform: str, event_id: str) -> str:
    """The key of one event from ``platform`` (``"discord"`` or ``"slack"``)."""
    return event_id if platform == "discord" else f"{platform}:{event_id}"


def review_run(review_id: str) -> str:
    """The key of the job an approved review runs: approving twice runs it once."""
    return f"review:{review_id}"


def again(key: str) -> str:
    """The key of the one rerun of an interrupted job's event; a third delivery is a
    duplicate of this one."""
    return key + AGAIN
