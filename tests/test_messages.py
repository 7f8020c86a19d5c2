"""The wording users read: money, reset times, errors, result lines and tables."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.catalog import load_catalog
from bot.errors import (
    ContentRejectedError,
    InvalidRequestError,
    ProviderAuthError,
    ProviderUnavailableError,
    QuotaExceededError,
)
from bot.messages import (
    TEMPORARILY_UNAVAILABLE,
    allowance_text,
    describe,
    format_reset,
    is_operator_fault,
    models_table,
    result_summary,
)
from bot.models import Allowance, GenerationRequest, GenerationResult, LimitUsage
from bot.money import format_usd

NOW = datetime(2026, 11, 25, 13, 52, tzinfo=UTC)
MIDNIGHT = datetime(2026, 11, 26, tzinfo=UTC)


@pytest.mark.parametrize(
    ("micros", "text"),
    [(0, "$0.00"), (3_000, "$0.003"), (52_000, "$0.052"), (1_500_000, "$1.50"), (12, "$0.000012")],
)
def test_format_usd(micros: int, text: str) -> None:
    assert format_usd(micros) == text


def test_format_reset_says_when_and_how_long() -> None:
    assert format_reset(MIDNIGHT, NOW) == "2026-11-26 00:00 UTC (in 10h 8m)"


def test_quota_message_names_the_limit_usage_and_reset() -> None:
    err = QuotaExceededError(
        limit="images_per_day", allowed=10, used=9, requested=4, resets_at=MIDNIGHT
    )
    assert describe(err, now=NOW) == (
        "You have reached the daily image limit (9 of 10 images used; this job needs "
        "4 images). It resets 2026-11-26 00:00 UTC (in 10h 8m). Nothing was charged."
    )


def test_user_fixable_errors_say_what_to_do_and_faults_do_not_leak() -> None:
    invalid = InvalidRequestError("n must be 1-4 for flux")
    assert "n must be 1-4 for flux" in describe(invalid)
    assert "rewording" in describe(ContentRejectedError("content_policy_violation"))
    secret = ProviderAuthError("401 invalid_api_key from https://api.example/v1")
    assert describe(secret) == TEMPORARILY_UNAVAILABLE
    assert is_operator_fault(secret) and is_operator_fault(ProviderUnavailableError("502"))
    assert not is_operator_fault(ContentRejectedError("x"))
    assert not is_operator_fault(invalid)


def test_result_summary_and_allowance() -> None:
    allowance = Allowance(
        (
            LimitUsage("images_per_day", allowed=20, used=2, resets_at=MIDNIGHT),
            LimitUsage("usd_micros_per_month", allowed=5_000_000, used=6_000, resets_at=MIDNIGHT),
        )
    )
    result = GenerationResult(
        job_id="j",
        request=GenerationRequest("a fox", "black-forest-labs/flux-1-schnell", "1024x1024", 2, 42),
        images=(),
        cost_micros=6_000,
        model_label="FLUX.1 [schnell]",
        allowance=allowance,
    )
    assert (
        result_summary(result) == "FLUX.1 [schnell] · 1024x1024 · seed 42 · $0.006 · 18 left today"
    )
    assert allowance_text(allowance, now=NOW).splitlines() == [
        "Daily image limit: 18 images left of 20 images, resets 2026-11-26 00:00 UTC (in 10h 8m)",
        "Monthly spending limit: $4.994 left of $5.00, resets 2026-11-26 00:00 UTC (in 10h 8m)",
    ]
    assert allowance_text(Allowance()) == "You have no limits set: generate away."


def test_models_table_lists_every_model_with_its_price() -> None:
    catalog = load_catalog()
    lines = models_table(catalog, default=catalog.default).splitlines()
    assert lines[0].split() == ["model", "id", "price/image", "max", "n", "sizes"]
    assert lines[1].startswith("flux (default)")
    assert "$0.003" in lines[1] and "$0.002" in lines[2]
    assert "$0.013" in lines[3] and "$0.004" in lines[4]
    assert "2048x2048" in lines[4]


def test_scheduler_and_moderation_refusals_say_nothing_was_charged() -> None:
    from bot.errors import (
        ChannelNotAllowedError,
        JobCancelledError,
        PromptRefusedError,
        QueueFullError,
        ShuttingDownError,
        TooManyJobsError,
    )

    assert describe(TooManyJobsError(2)).startswith("You already have 2 image jobs on the way")
    for err in (QueueFullError(100), JobCancelledError("j"), ShuttingDownError()):
        assert "Nothing was charged" in describe(err)
    refused = describe(PromptRefusedError(source="filter", rule="word:badword"))
    assert "server's rules" in refused and "badword" not in refused
    shown = describe(ChannelNotAllowedError(("C1", "C2")), channel_label=lambda c: f"<#{c}>")
    assert shown.endswith("use <#C1>, <#C2>.")
    assert describe(ChannelNotAllowedError(("C1",))).endswith("use C1.")  # no platform markup
