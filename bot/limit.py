"""The names of the quota limits, and what each one is: money or images, whose, over which
window. Code asks the name (``name.is_money``) instead of guessing from its spelling.

The values are stored (audit rows, ``Limits`` fields) and typed by admins, so they never
change; a new limit is a new member here, its column in the ledger, and its label in
``bot.messages``.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["LimitName", "LimitScope", "Window"]


class LimitScope(StrEnum):
    """Whose usage a limit counts: one member's, or the whole server's (workspace's)."""

    USER = "user"
    SERVER = "server"


class Window(StrEnum):
    """The calendar window (UTC) a limit counts over."""

    DAY = "day"
    MONTH = "month"


class LimitName(StrEnum):
    IMAGES_PER_DAY = "images_per_day"
    IMAGES_PER_MONTH = "images_per_month"
    USD_MICROS_PER_MONTH = "usd_micros_per_month"
    # The workspace-wide monthly spend cap (``Ledger.set_spend_cap``), on top of the others.
    SERVER_USD_MICROS_PER_MONTH = "server_usd_micros_per_month"

    @property
    def is_money(self) -> bool:
        """Counted in micro-dollars (else in images)."""
        return self in (LimitName.USD_MICROS_PER_MONTH, LimitName.SERVER_USD_MICROS_PER_MONTH)

    @property
    def scope(self) -> LimitScope:
        if self is LimitName.SERVER_USD_MICROS_PER_MONTH:
            return LimitScope.SERVER
        return LimitScope.USER

    @property
    def window(self) -> Window:
        return Window.DAY if self is LimitName.IMAGES_PER_DAY else Window.MONTH

    @classmethod
    def parse(cls, name: str) -> LimitName | None:
        """The limit spelt ``name``, or ``None`` for any other name (e.g. an audit row's
        ``spoilers``)."""
        try:
            return cls(name)
        except ValueError:
            return None

    @classmethod
    def settable(cls) -> tuple[LimitName, ...]:
        """The limits set per scope (the fields of ``bot.models.Limits``), in the order a
        refusal reports them; the server cap has its own setting."""
        return tuple(name for name in cls if name.scope is LimitScope.USER)
