"""The error groups carry what callers used to work out class by class: the refund reason the
ledger stores, whether it is the operator's fault, how loudly it is logged."""

from __future__ import annotations

import logging

import pytest

from bot.errors import (
    BotError,
    ChannelNotAllowedError,
    ConfigError,
    ContentRejectedError,
    DeliveryError,
    InvalidRequestError,
    JobCancelledError,
    JobStoppedError,
    JobTimeoutError,
    PromptRefusedError,
    ProviderAuthError,
    ProviderQuotaError,
    ProviderRateLimitedError,
    ProviderTimeoutError,
    ProviderWaitTooLongError,
    QueueFullError,
    ReviewStateError,
    ServerRulesError,
    ShuttingDownError,
    TooManyJobsError,
)
from bot.messages import describe, is_operator_fault


@pytest.mark.parametrize(
    ("err", "reason"),
    [
        (ContentRejectedError("policy"), "content_rejected"),
        (DeliveryError("upload failed"), "delivery_failed"),
        (ProviderTimeoutError("slow"), "provider_error:ProviderTimeoutError"),
        (ProviderQuotaError("billing"), "provider_error:ProviderQuotaError"),
        (
            ProviderWaitTooLongError("429", wait=600, hold=60),
            "provider_error:ProviderWaitTooLongError",
        ),
        (JobTimeoutError("j1", 4.0), "job_timeout"),
        (JobCancelledError("j1"), "cancelled"),
        (ShuttingDownError(), "shutdown"),
        (TooManyJobsError(2), "too_many_jobs"),
        (QueueFullError(100), "queue_full"),
        (InvalidRequestError("no"), "failed:InvalidRequestError"),
    ],
)
def test_each_error_names_the_refund_reason_the_ledger_has_always_stored(
    err: BotError, reason: str
) -> None:
    assert err.refund_reason == reason


def test_the_jobs_stopped_before_their_charge_form_one_group() -> None:
    stopped = (
        QueueFullError(1),
        TooManyJobsError(1),
        JobCancelledError("j"),
        ShuttingDownError(),
        JobTimeoutError("j", 1.0),
        DeliveryError("x"),
    )
    assert all(isinstance(err, JobStoppedError) for err in stopped)
    for err in (ProviderTimeoutError("x"), InvalidRequestError("x")):
        assert not isinstance(err, JobStoppedError)


def test_the_job_budget_is_its_own_error_and_reads_as_the_provider_timeout_did() -> None:
    late = JobTimeoutError("j1", 4.0)
    assert not isinstance(late, ProviderTimeoutError)
    assert late.job_id == "j1" and late.budget == 4.0
    assert describe(late) == describe(ProviderTimeoutError("slow"))
    assert is_operator_fault(late)  # logged in full, as before


def test_an_id_given_when_the_error_is_made_is_kept() -> None:
    assert DeliveryError("x", job_id="j1").in_job("j2").job_id == "j1"
    assert ProviderTimeoutError("x").in_job("j2").job_id == "j2"
    assert QueueFullError(3, job_id="j3").job_id == "j3"


def test_server_rules_refusals_form_one_group() -> None:
    for err in (PromptRefusedError(source="filter", rule="w"), ChannelNotAllowedError(("C",))):
        assert isinstance(err, ServerRulesError)


def test_a_review_state_error_reads_as_the_invalid_request_it_replaces() -> None:
    err = ReviewStateError("an admin has already decided about this prompt")
    assert isinstance(err, InvalidRequestError)
    assert describe(err) == describe(InvalidRequestError(err.reason))


def test_operator_faults_and_how_loudly_they_are_logged() -> None:
    assert is_operator_fault(ConfigError("bad")) and is_operator_fault(RuntimeError("bug"))
    assert is_operator_fault(ProviderRateLimitedError("429"))
    assert not is_operator_fault(ContentRejectedError("x"))
    assert not is_operator_fault(PromptRefusedError(source="filter", rule="w"))
    assert ProviderAuthError("401").log_level == logging.ERROR
    assert ProviderQuotaError("x").log_level == logging.WARNING
    assert ContentRejectedError("x").log_level == logging.INFO
    assert TooManyJobsError(1).log_level == logging.INFO


def test_only_an_error_raised_after_telling_the_user_is_marked_notified() -> None:
    assert DeliveryError("upload failed", notified=True).notified
    assert not DeliveryError("upload failed").notified
    assert not ProviderTimeoutError("slow").notified
