"""Retry schedule and classification (kubeinfer.storage.retrying), with a fake sleep."""

from __future__ import annotations

import pytest

from kubeinfer.storage import credentials, errors, retrying


def test_delays_double_and_are_capped() -> None:
    policy = retrying.RetryPolicy(attempts=6, base_delay=0.5, max_delay=3.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_transient_errors_are_retried_until_success() -> None:
    outcomes: list[Exception | str] = [
        errors.TransientError("503"),
        errors.TransientError("503"),
        "ok",
    ]
    slept: list[float] = []

    def operation() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    policy = retrying.RetryPolicy(attempts=3, base_delay=0.25)
    assert (
        retrying.call_with_retries(operation, policy=policy, what="x", sleep=slept.append) == "ok"
    )
    assert slept == [0.25, 0.5]


def test_attempts_are_bounded() -> None:
    calls = 0

    def operation() -> None:
        nonlocal calls
        calls += 1
        raise errors.TransientError("connection refused")

    policy = retrying.RetryPolicy(attempts=3, base_delay=0)
    with pytest.raises(errors.TransientError, match="x: gave up after 3 attempts"):
        retrying.call_with_retries(operation, policy=policy, what="x", sleep=lambda _: None)
    assert calls == 3


@pytest.mark.parametrize(
    "error",
    [errors.ObjectNotFound("404"), errors.AccessDenied("403"), errors.ChecksumMismatch("sha")],
)
def test_permanent_errors_fail_at_once(error: errors.StorageError) -> None:
    calls = 0

    def operation() -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(type(error)):
        retrying.call_with_retries(
            operation, policy=retrying.RetryPolicy(), what="x", sleep=lambda _: None
        )
    assert calls == 1


def test_policy_needs_an_attempt() -> None:
    with pytest.raises(ValueError, match="at least one attempt"):
        retrying.RetryPolicy(attempts=0)


def test_credentials_are_read_from_env_and_kept_out_of_repr() -> None:
    creds = credentials.Credentials.from_env(
        {
            "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG",
            "S3_ENDPOINT": "http://127.0.0.1:9000",
            "AWS_REGION": "eu-west-1",
            "STORAGE_HTTP_TOKEN": "tok-123",
        }
    )
    assert creds.s3_endpoint_url == "http://127.0.0.1:9000"
    assert creds.s3_region == "eu-west-1"
    for secret in ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", "tok-123"):
        assert secret not in repr(creds)
        assert secret not in creds.redact(f"server said: {secret}!")
    assert creds.redact("nothing secret") == "nothing secret"


def test_http_authorization_wins_over_a_bare_token() -> None:
    env = {"HTTP_AUTHORIZATION": "Basic YWxpY2U6aHVudGVyMg==", "STORAGE_HTTP_TOKEN": "tok"}
    creds = credentials.Credentials.from_env(env)
    assert creds.http_authorization == "Basic YWxpY2U6aHVudGVyMg=="
    assert "YWxpY2U6aHVudGVyMg==" not in creds.redact("got YWxpY2U6aHVudGVyMg==")
    assert credentials.Credentials.from_env({"STORAGE_HTTP_TOKEN": "tok"}).http_authorization == (
        "Bearer tok"
    )
