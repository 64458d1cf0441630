"""The queue view: what the scheduler has to do, is doing, and did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cartwin.scheduler.queue import (
    JOB_COLUMNS,
    STATES,
    Job,
    queue_errors,
    queue_table_exists,
    store_lock,
)
from cartwin.store import TwinStore


@dataclass(frozen=True)
class QueueView:
    """A snapshot of the update queue.

    Attributes
    ----------
    store : str
        The store's path or URL (password masked).
    counts : dict
        ``{model: {state: number of jobs}}`` over the whole history.
    open_jobs : tuple of Job
        Pending and running jobs, soonest due first.
    recent_jobs : tuple of Job
        The latest finished jobs (done or failed), newest first.
    """

    store: str
    counts: dict[str, dict[str, int]]
    open_jobs: tuple[Job, ...] = ()
    recent_jobs: tuple[Job, ...] = ()

    def totals(self) -> dict[str, int]:
        """Jobs per state over all models (every state listed, zeros included)."""
        return {
            state: sum(by_state.get(state, 0) for by_state in self.counts.values())
            for state in STATES
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (for ``cartwin queue --json``)."""
        return {
            "store": self.store,
            "totals": self.totals(),
            "counts": self.counts,
            "open_jobs": [job.to_dict() for job in self.open_jobs],
            "recent_jobs": [job.to_dict() for job in self.recent_jobs],
        }


@queue_errors
def queue_view(store: TwinStore, *, limit: int = 50) -> QueueView:
    """Counts per model and state, open jobs, and the ``limit`` latest finished.

    Reads only; a store whose queue was never used gives an empty view.
    """
    with store_lock(store):
        if not queue_table_exists(store):
            return QueueView(store.path, {})
        rows = store.con.execute(
            "SELECT model, state, count(*) FROM pending_update GROUP BY model, state"
        ).fetchall()
        open_rows = store.con.execute(
            f"SELECT {JOB_COLUMNS} FROM pending_update WHERE state IN "
            "('pending', 'running') ORDER BY due_at, job_id LIMIT ?",
            [limit],
        ).fetchall()
        recent_rows = store.con.execute(
            f"SELECT {JOB_COLUMNS} FROM pending_update WHERE state IN "
            "('done', 'failed') ORDER BY finished_at DESC, job_id DESC LIMIT ?",
            [limit],
        ).fetchall()
    counts: dict[str, dict[str, int]] = {}
    for model, state, n in rows:
        counts.setdefault(model, {})[state] = int(n)
    return QueueView(
        store.path,
        counts,
        tuple(Job(*row) for row in open_rows),
        tuple(Job(*row) for row in recent_rows),
    )
