"""Every error orchestrion raises, in one place, so callers can catch by meaning."""

from __future__ import annotations

from collections.abc import Mapping


class OrchestrionError(Exception):
    """Base class of everything orchestrion raises on purpose."""


# ---- store -----------------------------------------------------------------------------


class StoreError(OrchestrionError):
    """The store cannot be used (bad URL, unreachable, corrupt)."""


class NoStore(StoreError):
    """Nothing is stored at the given place, and the caller asked not to create a store
    there (read-only commands never create one)."""


class NotAnOrchestrionStore(StoreError):
    """The file or database exists but does not hold an orchestrion store. It is left untouched."""


class SchemaTooNew(StoreError):
    """The store was written by a newer orchestrion. It is left untouched."""


class StoreConflict(StoreError):
    """A write conflicted with what is stored (a duplicate step or event sequence number,
    or a state that changed concurrently). Nothing was written."""


class StoreBusy(StoreError):
    """The store stayed locked by other writers longer than the configured patience."""


class NotFound(OrchestrionError):
    """No such conversation or run (or it belongs to another tenant: same answer)."""


# ---- engine ----------------------------------------------------------------------------


class IllegalTransition(OrchestrionError):
    """A conversation was asked to move between states the state machine does not connect."""


class LeaseLost(OrchestrionError):
    """This worker's lease on a run was taken over (its epoch is stale): its writes are refused."""


class NonDeterminismError(OrchestrionError):
    """Replay asked for a different step than the journal recorded at that position."""


class ConversationBusy(OrchestrionError):
    """A turn was refused because the conversation already has an active run (or a
    conversation with an active run was asked to close)."""


class ConversationEnded(OrchestrionError):
    """A turn was refused because the conversation takes no more turns: it was closed, or
    it expired. Its history stays readable until it is purged."""


class ConversationClosed(ConversationEnded):
    """The conversation was closed (`Orchestrion.close_conversation`)."""


class ConversationExpired(ConversationEnded):
    """The conversation passed its expiry (its TTL after its last completed turn) with
    no turn in flight; the purge deletes it."""


class DeadlineExceeded(OrchestrionError):
    """The turn's deadline passed before it could finish."""


class TooManySteps(OrchestrionError):
    """The agent loop hit its step guard without reaching a final answer."""


class InvalidOutput(OrchestrionError):
    """The final answer never matched the agent's output type within the re-ask budget."""


class RunCancelled(OrchestrionError):
    """The run was cancelled explicitly."""


class StepFailed(OrchestrionError):
    """A journaled step ended in a terminal error; replay raises the same error again."""

    def __init__(self, step_name: str, error_type: str, message: str) -> None:
        super().__init__(f"step {step_name!r} failed: {error_type}: {message}")
        self.step_name = step_name
        self.error_type = error_type
        self.message = message


# ---- providers -------------------------------------------------------------------------


class ProviderError(OrchestrionError):
    """A model provider failed. Carries what the resilience layer needs to decide."""

    retryable_by_default = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        # Seconds the provider asked us to wait (from retry-after-ms or retry-after).
        self.retry_after = retry_after
        self.request_id = request_id
        self.error_type = error_type
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def retryable(self) -> bool:
        return self.retryable_by_default

    def __str__(self) -> str:
        parts = [self.message]
        if self.status_code is not None:
            parts.append(f"status={self.status_code}")
        if self.provider:
            parts.append(f"provider={self.provider}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)


class RateLimited(ProviderError):
    """429: slow down; `retry_after` says for how long when the provider told us."""

    retryable_by_default = True


class ProviderUnavailable(ProviderError):
    """5xx, 529 (overloaded), 408, 409: the provider may succeed on another attempt."""

    retryable_by_default = True


class ProviderTimeout(ProviderError):
    retryable_by_default = True


class ProviderConnectionError(ProviderError):
    retryable_by_default = True


class MalformedResponse(ProviderError):
    """The provider answered something that is not its protocol (bad JSON, cut stream)."""

    retryable_by_default = True


class BadRequest(ProviderError):
    """400/404/422: the request itself is wrong; retrying will not help."""


class AuthenticationFailed(ProviderError):
    """401/403: the key is missing, wrong or not allowed."""


class ContextLengthExceeded(BadRequest):
    """The prompt does not fit the model's context window."""
