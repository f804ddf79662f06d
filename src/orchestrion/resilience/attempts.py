"""The retry loop's attempts journaled in the store, so a worker that takes over a run
crashed in the middle of a backoff resumes at the right attempt number and waits only
what was left of the wait."""

from __future__ import annotations

import logging

from orchestrion.resilience.pipeline import AttemptState
from orchestrion.store.base import Lease, Store

log = logging.getLogger("orchestrion.resilience")


class StepAttemptJournal:
    """The retry loop's AttemptJournal for one step, stored at (run_id, seq) and fenced by
    the run's lease: a worker whose lease was taken over gets LeaseLost when it saves.

    One journal belongs to one pipeline call. `pipeline` tags the saved state: a journal
    tagged differently (another dependency's call in the same step, e.g. a fallback model)
    ignores the state instead of resuming someone else's attempt count. Give a step's
    journal to its primary call; a step that makes several resilient calls in sequence
    should tag each with its pipeline name.

    `fresh=True` says that no earlier owner can have attempted the step (a run that was
    never interrupted): there is nothing to load, and `load` does not read the store.
    """

    __slots__ = ("fresh", "lease", "pipeline", "run_id", "seq", "store")

    def __init__(
        self,
        store: Store,
        lease: Lease,
        run_id: str,
        seq: int,
        *,
        pipeline: str | None = None,
        fresh: bool = False,
    ) -> None:
        if run_id != lease.run_id:
            raise ValueError(
                f"StepAttemptJournal: run_id {run_id!r} is not the lease's run {lease.run_id!r}"
            )
        self.store = store
        self.lease = lease
        self.run_id = run_id
        self.seq = seq
        self.pipeline = pipeline
        self.fresh = fresh

    async def load(self) -> AttemptState | None:
        if self.fresh:
            return None
        doc = await self.store.load_attempt(self.run_id, self.seq)
        if doc is None or doc.get("pipeline") != self.pipeline:
            return None
        try:
            return AttemptState.from_json(doc)
        except (KeyError, TypeError, ValueError):
            log.warning(
                "run %s step %d: unreadable attempt state %r ignored; retrying from attempt 1",
                self.run_id,
                self.seq,
                doc,
            )
            return None

    async def save(self, state: AttemptState) -> None:
        doc = state.to_json()
        doc["pipeline"] = self.pipeline
        await self.store.save_attempt(self.lease, self.seq, doc)


__all__ = ["StepAttemptJournal"]
