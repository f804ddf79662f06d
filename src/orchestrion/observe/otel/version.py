"""The version the instrumentation scope reports."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("orchestrion")
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0"
