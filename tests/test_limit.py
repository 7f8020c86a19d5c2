"""Limit names (``bot.limit``): what each limit is, asked of the name and never guessed from
its spelling; the spellings are stored and typed by admins, so they are pinned here."""

from __future__ import annotations

from dataclasses import fields

from bot.limit import LimitName, LimitScope, Window
from bot.models import Limits


def test_the_spellings_never_change() -> None:
    assert [str(name) for name in LimitName] == [
        "images_per_day",
        "images_per_month",
        "usd_micros_per_month",
        "server_usd_micros_per_month",
    ]


def test_each_limit_knows_its_unit_scope_and_window() -> None:
    table = {name: (name.is_money, name.scope, name.window) for name in LimitName}
    assert table == {
        LimitName.IMAGES_PER_DAY: (False, LimitScope.USER, Window.DAY),
        LimitName.IMAGES_PER_MONTH: (False, LimitScope.USER, Window.MONTH),
        LimitName.USD_MICROS_PER_MONTH: (True, LimitScope.USER, Window.MONTH),
        LimitName.SERVER_USD_MICROS_PER_MONTH: (True, LimitScope.SERVER, Window.MONTH),
    }


def test_the_settable_limits_are_the_fields_of_limits() -> None:
    assert [str(n) for n in LimitName.settable()] == [f.name for f in fields(Limits)]


def test_other_names_are_not_limits() -> None:
    assert LimitName.parse("images_per_day") is LimitName.IMAGES_PER_DAY
    assert LimitName.parse("spoilers") is None
    assert LimitName.parse("usd_per_month") is None  # what admins type, not a stored name
