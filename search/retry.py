"""One retry policy for every Milvus call (tenacity), decided by error type and code.

Retried: the server cannot be reached or says it is not ready (gRPC ``UNAVAILABLE`` and
friends, pymilvus's ``CONNECT_FAILED`` code and its unavailable/connect exception types, a
server status marked ``retriable``, legacy not-ready codes). Never retried: input errors and
anything else (a bad expression, a missing collection): waiting would not change them.
Attempts and backoff come from :class:`~search.config.Settings` (``retries``,
``retry_backoff``: exponential, doubling).
"""

from __future__ import annotations

import logging
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from .config import Settings

CONNECT_FAILED = 2  # pymilvus.client.types.Status.CONNECT_FAILED


def _grpc_transient_codes() -> frozenset[Any]:
    import grpc

    c = grpc.StatusCode
    return frozenset({c.UNAVAILABLE, c.DEADLINE_EXCEEDED, c.RESOURCE_EXHAUSTED, c.ABORTED})


def _legacy_not_ready_codes() -> frozenset[int]:
    from pymilvus.grpc_gen import common_pb2

    names = ("NotReadyServe", "NotReadyCoordActivating", "RateLimit")
    return frozenset(common_pb2.ErrorCode.Value(n) for n in names)


def transient(exc: BaseException) -> bool:
    """Whether retrying the same call may succeed (by exception type and error code)."""
    import grpc
    from pymilvus.exceptions import ConnectError, MilvusException, MilvusUnavailableException

    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return exc.code() in _grpc_transient_codes()
    if not isinstance(exc, MilvusException):
        return False
    if exc.is_input_error:
        return False
    if exc.retriable or isinstance(exc, MilvusUnavailableException | ConnectError):
        return True
    code = exc.code
    if isinstance(code, grpc.StatusCode):  # pymilvus wraps an RpcError with its status
        return code in _grpc_transient_codes()
    if code == CONNECT_FAILED:
        return True
    return exc.compatible_code in _legacy_not_ready_codes()


def short(exc: BaseException) -> str:
    """The first line of an error, at most 300 characters (for one-line messages)."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__)[:300]


def retrying(settings: Settings, what: str, log: logging.Logger) -> Retrying:
    """A tenacity loop: ``settings.store.retries`` retries of transient failures, then re-raise."""

    def announce(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        doing = "cannot connect to Milvus" if what == "connect" else f"Milvus {what} failed"
        reason = short(exc) if exc else "?"
        log.warning("%s (%s); retry %d in %.1fs", doing, reason, state.attempt_number, delay)

    backoff = max(0.0, settings.store.retry_backoff)
    return Retrying(
        stop=stop_after_attempt(max(1, settings.store.retries + 1)),
        wait=wait_exponential(multiplier=backoff, exp_base=2, min=backoff, max=backoff * 64),
        retry=retry_if_exception(transient),
        before_sleep=announce,
        reraise=True,
    )
