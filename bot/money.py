"""Money: integer micro-dollars (1 USD = 1,000,000), so that sums and limits are exact; the
exact conversion from dollars, and the two ways dollars are written (for people and for
files)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = ["MICROS_PER_USD", "format_usd", "usd_text", "usd_to_micros"]

MICROS_PER_USD = 1_000_000


def usd_to_micros(value: object) -> int:
    """Exact conversion of a USD amount (``0.003``, ``"0.003"``, ``3``) to micro-dollars."""
    if isinstance(value, bool):
        raise ValueError("expected a number of dollars")
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"{value!r} is not a number of dollars") from exc
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{value!r} is not a non-negative number of dollars")
    micros = amount * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise ValueError(f"{value!r} has more precision than a micro-dollar")
    return int(micros)


def format_usd(micros: int) -> str:
    """``3000`` -> ``$0.003``; ``1500000`` -> ``$1.50``: cents always, more digits when needed."""
    sign = "-" if micros < 0 else ""
    dollars, rest = divmod(abs(micros), MICROS_PER_USD)
    fraction = f"{rest:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}${dollars}.{fraction}"


def usd_text(micros: int) -> str:
    """Exact decimal dollars for files: ``2500`` -> ``"0.002500"``."""
    sign = "-" if micros < 0 else ""
    dollars, rest = divmod(abs(micros), MICROS_PER_USD)
    return f"{sign}{dollars}.{rest:06d}"
