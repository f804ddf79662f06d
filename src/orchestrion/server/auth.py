"""API keys: each key is bound to one tenant; a request presents it as a bearer token.

Keys come from `ORCHESTRION_API_KEYS="key1=tenantA,key2=tenantB"` or from a file with one
`key=tenant` per line (blank lines and `#` comments ignored). Keys are never logged: the
errors below name a line number or a position, never the key itself.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

KEYS_ENV = "ORCHESTRION_API_KEYS"
MIN_KEY_LENGTH = 16
# How to make a key that is accepted, for error messages.
KEY_HINT = (
    f"at least {MIN_KEY_LENGTH} characters, e.g. from "
    "`python3 -c 'import secrets; print(secrets.token_urlsafe(24))'`"
)


class KeyConfigError(ValueError):
    """The key configuration is unusable (the message never contains a key)."""


def _parse_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for where, pair in pairs:
        key, sep, tenant = pair.partition("=")
        key, tenant = key.strip(), tenant.strip()
        if not sep or not key or not tenant:
            raise KeyConfigError(f"{where}: expected key=tenant")
        if len(key) < MIN_KEY_LENGTH:
            raise KeyConfigError(f"{where}: a key needs {KEY_HINT}")
        if any(c.isspace() or not c.isprintable() for c in key):
            raise KeyConfigError(f"{where}: a key cannot contain spaces or control characters")
        if key in keys:
            raise KeyConfigError(f"{where}: the same key is given twice")
        keys[key] = tenant
    return keys


def parse_keys(text: str) -> dict[str, str]:
    """`key1=tenantA,key2=tenantB` (the environment variable's format)."""
    items = [p for p in text.split(",") if p.strip()]
    return _parse_pairs((f"{KEYS_ENV} entry {i}", p) for i, p in enumerate(items, 1))


def read_keys_file(path: str | Path) -> dict[str, str]:
    """One `key=tenant` per line; blank lines and lines starting with # are ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyConfigError(f"cannot read keys file {path}: {exc.__class__.__name__}") from None
    lines = [
        (f"{path} line {n}", line)
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return _parse_pairs(lines)


def generate_key() -> str:
    return "orx_" + secrets.token_urlsafe(24)


class KeyRing:
    """Maps a presented bearer token to its tenant, comparing in constant time."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = [(k.encode(), t) for k, t in keys.items()]

    def __len__(self) -> int:
        return len(self._keys)

    def tenant_for(self, authorization: str | None) -> str | None:
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = token.strip().encode("utf-8", "surrogateescape")
        found: str | None = None
        for key, tenant in self._keys:  # every key compared: no early exit
            if hmac.compare_digest(key, presented):
                found = tenant
        return found
