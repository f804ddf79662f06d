import json

import pydantic
import pytest

from orchestrion.errors import (
    AuthenticationFailed,
    BadRequest,
    DeadlineExceeded,
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from orchestrion.resilience import (
    AttemptTimeout,
    BreakerOpen,
    Classifier,
    RetryBudgetExhausted,
    StepTimeout,
    default_is_retryable,
    status_is_retryable,
)


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504, 529, 599])
def test_retryable_statuses(status: int) -> None:
    assert status_is_retryable(status) is True
    assert default_is_retryable(ProviderError("x", status_code=status)) is True


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_caller_fault_statuses(status: int) -> None:
    assert status_is_retryable(status) is False
    # The status beats the class's default.
    assert default_is_retryable(ProviderUnavailable("x", status_code=status)) is False


def test_status_free_errors_follow_their_class() -> None:
    assert default_is_retryable(RateLimited("x"))
    assert default_is_retryable(ProviderTimeout("x"))
    assert default_is_retryable(ProviderConnectionError("x"))
    assert default_is_retryable(MalformedResponse("x", status_code=200))
    assert not default_is_retryable(BadRequest("x"))
    assert not default_is_retryable(AuthenticationFailed("x"))


def test_builtin_errors() -> None:
    assert default_is_retryable(TimeoutError())
    assert default_is_retryable(ConnectionResetError())
    assert default_is_retryable(AttemptTimeout("m", 1))
    assert not default_is_retryable(ValueError("bad"))
    assert not default_is_retryable(KeyError("bug"))
    assert not default_is_retryable(json.JSONDecodeError("x", "", 0))


def test_resilience_errors_are_never_retried() -> None:
    assert not default_is_retryable(BreakerOpen("b", None))
    assert not default_is_retryable(RetryBudgetExhausted("p", ValueError(), 1))
    assert not default_is_retryable(DeadlineExceeded("late"))
    assert not default_is_retryable(StepTimeout("s", 1))


def test_validation_error_not_retryable() -> None:
    class M(pydantic.BaseModel):
        x: int

    with pytest.raises(pydantic.ValidationError) as info:
        M(x="nope")  # type: ignore[arg-type]
    assert not default_is_retryable(info.value)


def test_sdk_errors_by_name_and_status_attribute() -> None:
    class APIConnectionError(Exception):
        pass

    class APITimeoutError(APIConnectionError):
        pass

    class APIStatusError(Exception):
        def __init__(self, status_code: int) -> None:
            self.status_code = status_code

    class Response:
        status_code = 503

    class HTTPStatusError(Exception):
        response = Response()

    assert default_is_retryable(APITimeoutError())
    assert default_is_retryable(APIStatusError(429))
    assert not default_is_retryable(APIStatusError(401))
    assert default_is_retryable(HTTPStatusError())


def test_overrides_by_type() -> None:
    class Flaky(Exception):
        pass

    c = Classifier(retry_on=(Flaky,), never_retry_on=(RateLimited,))
    assert c.is_retryable(Flaky())
    assert not c.is_retryable(RateLimited("quota gone for the month"))
    assert c.is_retryable(ProviderUnavailable("x"))  # defaults still apply


def test_predicate_wins_and_can_defer() -> None:
    def pred(exc: BaseException) -> bool | None:
        if isinstance(exc, ProviderError) and exc.error_type == "insufficient_quota":
            return False
        if isinstance(exc, ValueError):
            return True
        return None

    c = Classifier(predicate=pred, retry_on=(RateLimited,))
    assert not c.is_retryable(RateLimited("x", error_type="insufficient_quota"))
    assert c.is_retryable(RateLimited("x"))
    assert c.is_retryable(ValueError())
    assert not c.is_retryable(KeyError())


def test_result_override() -> None:
    c = Classifier(retry_on_result=lambda r: r == "")
    assert c.retry_on_result is not None
    assert c.retry_on_result("")
    assert not c.retry_on_result("hello")
