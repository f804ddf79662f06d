"""The HTTP service: `create_app` (an ASGI app), `serve` (its CLI command)."""

from orchestrion.server.app import Limits, create_app

__all__ = ["Limits", "create_app"]
