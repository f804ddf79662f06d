"""Random identifiers (runs, traces, spans, tool calls).

Ids must be unique, not secret: access is always checked against the tenant, never
inferred from knowing an id. So they come from a PRNG seeded once from the OS (and
reseeded in a forked child, so two processes never share a sequence) rather than from
`os.urandom` per id: a system call for every event and tool call was a visible share of
a step's cost.
"""

from __future__ import annotations

import os
import random

_rng = random.Random(int.from_bytes(os.urandom(32), "big"))


def _reseed() -> None:
    _rng.seed(int.from_bytes(os.urandom(32), "big"))


os.register_at_fork(after_in_child=_reseed)


def random_hex(digits: int) -> str:
    """`digits` random hexadecimal digits."""
    return f"{_rng.getrandbits(digits * 4):0{digits}x}"
