"""Update scheduler: recalibrate twins in the background when new data arrive.

Each model declares which observation kinds make it recalibrate and how soon
(:data:`UPDATE_RULES`); :func:`enqueue_for_observations` turns new data into
debounced jobs in a durable queue (table ``pending_update`` in the store's
database); :class:`Scheduler` runs them in background workers, each result a
new immutable twin version; :func:`queue_view` shows the queue. The command
line is in :mod:`cartwin.scheduler.cli` (``cartwin queue``, ``cartwin worker``).
"""

from __future__ import annotations

from cartwin.scheduler.queue import (
    QUEUE_TABLE,
    STATES,
    Job,
    LeaseLost,
    claim_job,
    complete_job,
    enqueue_for_observations,
    enqueue_for_records,
    ensure_queue,
    expire_leases,
    fail_job,
    store_lock,
)
from cartwin.scheduler.rules import (
    SINGLE_CELL,
    UPDATE_RULES,
    UpdateRule,
    check_rules,
    observation_kinds,
    triggered,
)
from cartwin.scheduler.view import QueueView, queue_view
from cartwin.scheduler.worker import (
    JobResult,
    Scheduler,
    SchedulerConfig,
    run_job,
    run_pending,
)

__all__ = [
    "QUEUE_TABLE",
    "SINGLE_CELL",
    "STATES",
    "UPDATE_RULES",
    "Job",
    "JobResult",
    "LeaseLost",
    "QueueView",
    "Scheduler",
    "SchedulerConfig",
    "UpdateRule",
    "check_rules",
    "claim_job",
    "complete_job",
    "enqueue_for_observations",
    "enqueue_for_records",
    "ensure_queue",
    "expire_leases",
    "fail_job",
    "observation_kinds",
    "queue_view",
    "run_job",
    "run_pending",
    "store_lock",
    "triggered",
]
