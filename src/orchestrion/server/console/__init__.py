"""The web console: plain HTML, CSS and ES modules shipped inside the package (no build
step), served at /ui by `orchestrion serve` and by `orchestrion console` (docs/console.md).

The pages are static; everything they show comes from the JSON API, read with the key the
operator gives once. The server only hands out the files, with a content security policy
that allows the console's own scripts and nothing inline: the pages put data in the
document as text (never as markup), and the policy is the second line of defence.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

HERE = Path(__file__).parent
ASSETS = HERE / "assets"
MEDIA_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file the pages load, by its path under assets/ (read once: a few dozen KB)."""
    found: dict[str, Asset] = {}
    for path in sorted(ASSETS.rglob("*")):
        media_type = MEDIA_TYPES.get(path.suffix)
        if path.is_file() and media_type is not None:
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            found[path.relative_to(ASSETS).as_posix()] = Asset(body, media_type, etag)
    return found


def console_routes() -> list[BaseRoute]:
    """/ui (and every path below it: the pages route in the browser) and /ui/assets/."""
    assets = load_assets()
    index = (HERE / "index.html").read_text(encoding="utf-8")

    async def page(request: Request) -> Response:
        # Asset and API addresses are relative to <base>, so the console also works
        # when the app is mounted under a prefix (root_path).
        base = html.escape(str(request.scope.get("root_path", "")) + "/ui/", quote=True)
        return Response(
            index.replace("{{BASE}}", base),
            media_type="text/html; charset=utf-8",
            headers={"Cache-Control": "no-store", **SECURITY_HEADERS},
        )

    async def asset(request: Request) -> Response:
        found = assets.get(request.path_params["path"])
        if found is None:
            raise HTTPException(404)
        headers = {"ETag": found.etag, "Cache-Control": "no-cache", **SECURITY_HEADERS}
        if request.headers.get("if-none-match") == found.etag:
            return Response(status_code=304, headers=headers)
        return Response(found.body, media_type=found.media_type, headers=headers)

    return [
        Route("/ui", page, methods=["GET"]),
        Route("/ui/assets/{path:path}", asset, methods=["GET"]),
        Route("/ui/{path:path}", page, methods=["GET"]),
    ]


__all__ = ["console_routes"]
