"""Fixtures of the argument-pipeline tests."""

from __future__ import annotations

import pytest
from argument_tools import make_registry

from orchestrion.tools import ToolRegistry


@pytest.fixture
def registry() -> ToolRegistry:
    return make_registry()
