"""The HTTP service: `create_app` (an ASGI app), `server_config` (its uvicorn
configuration, with deadlines for slow clients), `serve` (its CLI command)."""

from orchestrion.server.app import Limits, create_app
from orchestrion.server.deadlines import server_config

__all__ = ["Limits", "create_app", "server_config"]
