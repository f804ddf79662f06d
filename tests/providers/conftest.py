from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrion.chaos.testing import running_chaos_server


@pytest.fixture(scope="module")
def chaos_url() -> Iterator[str]:
    """A chaos server with no planned faults (tests inject them per request by header)."""
    with running_chaos_server() as url:
        yield url
