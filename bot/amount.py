"""Admin-typed amounts (money and image counts), bounded before any conversion.

Every admin surface (Slack text, Discord options, the CLI) reads limits through here, so the
bounds are the same everywhere and the database never sees a value it cannot store. The text
is matched against a short pattern first: ``Decimal("1e999990")`` is cheap, but turning it into
micro-dollars builds a 3-million-bit integer, and one such command used to stall the event loop
for half a minute.
"""

from __future__ import annotations

import re

from bot.errors import InvalidRequestError
from bot.limit import LimitName
from bot.messages import count_amount_error, usd_amount_error
from bot.models import Limits
from bot.money import MICROS_PER_USD, usd_to_micros

__all__ = [
    "MAX_IMAGES",
    "MAX_USD",
    "MAX_USD_MICROS",
    "check_limits",
    "check_usd_micros",
    "parse_count",
    "parse_usd",
    "usd_option",
]

MAX_USD = 1_000_000
MAX_USD_MICROS = MAX_USD * MICROS_PER_USD
MAX_IMAGES = 1_000_000

# At most 7 whole digits and 6 decimals: $1,000,000.000000 is the largest that can match.
_USD = re.compile(r"\d{1,7}(?:\.\d{0,6})?|\.\d{1,6}", re.ASCII)
_COUNT = re.compile(r"\d{1,7}", re.ASCII)


def parse_usd(text: str, *, name: str) -> int:
    """``"12.50"`` or ``"$5"`` -> micro-dollars; anything else (exponents, more than 6
    decimals, more than $1,000,000, a sign) raises ``InvalidRequestError``."""
    value = text.strip().removeprefix("$").replace(",", "") if len(text) <= 32 else ""
    if not _USD.fullmatch(value):
        raise InvalidRequestError(usd_amount_error(name, MAX_USD))
    return check_usd_micros(usd_to_micros(value), name=name)


def usd_option(value: float, *, name: str) -> int:
    """A number a platform already parsed (a Discord option) -> micro-dollars, bounded."""
    if not 0 <= value <= MAX_USD:  # also refuses NaN
        raise InvalidRequestError(usd_amount_error(name, MAX_USD))
    try:
        return usd_to_micros(round(value, 6))
    except ValueError:
        raise InvalidRequestError(usd_amount_error(name, MAX_USD)) from None


def parse_count(text: str, *, name: str) -> int:
    """A whole number of images from 0 to ``MAX_IMAGES``."""
    value = text.strip().replace(",", "") if len(text) <= 32 else ""
    if not _COUNT.fullmatch(value) or int(value) > MAX_IMAGES:
        raise InvalidRequestError(count_amount_error(name, MAX_IMAGES))
    return int(value)


def check_usd_micros(micros: int, *, name: str) -> int:
    if not 0 <= micros <= MAX_USD_MICROS:
        raise InvalidRequestError(usd_amount_error(name, MAX_USD))
    return micros


def check_limits(limits: Limits) -> Limits:
    """Refuse limits beyond the bounds, whichever surface built them."""
    for name in (n for n in LimitName.settable() if not n.is_money):
        value = getattr(limits, name)
        if value is not None and not 0 <= value <= MAX_IMAGES:
            raise InvalidRequestError(count_amount_error(name, MAX_IMAGES))
    if limits.usd_micros_per_month is not None:
        check_usd_micros(limits.usd_micros_per_month, name="usd_per_month")
    return limits
