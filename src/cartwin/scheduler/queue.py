"""The durable update queue: table ``pending_update`` in the store's database.

One row per recalibration job: patient (pseudonym), model, reason (the
observation kinds that asked for it), when it is due, its state, attempts and
lease. The table lives next to the store's tables, so a job is as durable as
the data that triggered it, and a restart finds the work left to do.

States and moves::

    pending --claim--> running --complete--> done
       ^                  |  \\--fail, attempts < max--> pending (due later)
       |                  |   \\-fail, attempts = max--> failed
       +--lease expired---+  (worker died: claimed again, or failed at max)

* **Debounce**: :func:`enqueue_for_observations` adds to the patient's
  *pending* job of a model when there is one (more triggers, more kinds in the
  reason) instead of adding a job; a job already running does not take new
  observations, so they get a new pending job.
* **Leases**: a claim sets ``leased_until``; a worker that dies (SIGKILL, power)
  leaves a ``running`` row whose lease expires, and the job is claimed again.
  A job is never claimed while another job of the same patient is running, so
  the versions of one patient form a chain, not a fork.
* **Exactly one version per job**: :func:`complete_job` saves the twin version
  and marks the job done in one transaction, and only while the worker still
  holds the job (same worker and attempt); a worker that lost its lease writes
  nothing.

Concurrency: every function takes :func:`store_lock` (one lock per store
object: threads sharing a store take turns) and, on PostgreSQL, a
transaction-scoped advisory lock (:data:`QUEUE_LOCK`) so that processes
sharing the database take turns too. Each call is one short transaction.

Known limits
------------
* With DuckDB only one process can write the file: the workers must be
  threads of the process that owns the store (see
  :class:`cartwin.scheduler.worker.Scheduler`), and ``cartwin queue`` cannot
  read the file while ``cartwin worker`` runs on it.
* Rows of finished jobs are kept (they are the scheduler's history); nothing
  prunes them yet.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import duckdb

from cartwin.errors import DataError, StoreError
from cartwin.record.model import PatientRecord
from cartwin.record.pseudonym import looks_like_pseudonym
from cartwin.scheduler.rules import (
    UPDATE_RULES,
    UpdateRule,
    observation_kinds,
    triggered,
)
from cartwin.store import TwinStore, is_postgres_url

#: Name of the queue table.
QUEUE_TABLE = "pending_update"
#: Job states, in the order the queue view lists them.
STATES = ("pending", "running", "failed", "done")
#: PostgreSQL advisory lock key held by every queue transaction.
QUEUE_LOCK = int.from_bytes(b"cartwin\x02", "big")
#: Longest error text kept in ``last_error`` (characters).
MAX_ERROR_CHARS = 500

_DDL = (
    "CREATE SEQUENCE IF NOT EXISTS pending_update_seq",
    """
CREATE TABLE IF NOT EXISTS pending_update (
    job_id BIGINT PRIMARY KEY DEFAULT nextval('pending_update_seq'),
    pseudonym VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    n_triggers INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    due_at TIMESTAMPTZ NOT NULL,
    state VARCHAR NOT NULL
        CHECK (state IN ('pending', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL,
    leased_until TIMESTAMPTZ,
    worker VARCHAR,
    last_error VARCHAR,
    outcome VARCHAR,
    version_id VARCHAR,
    finished_at TIMESTAMPTZ
)
""",
    "CREATE INDEX IF NOT EXISTS pending_update_state ON pending_update (state, due_at)",
)

#: Columns of ``pending_update`` in :class:`Job` field order.
JOB_COLUMNS = (
    "job_id, pseudonym, model, reason, n_triggers, created_at, due_at, state, "
    "attempts, leased_until, worker, last_error, outcome, version_id, finished_at"
)

_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()
_READY: weakref.WeakSet = weakref.WeakSet()


@dataclass(frozen=True)
class Job:
    """One row of ``pending_update`` (times are UTC).

    Attributes
    ----------
    job_id : int
        Row id.
    pseudonym, model : str
        Patient and the model whose rule created the job.
    reason : str
        Observation kinds that asked for it, comma-separated and sorted.
    n_triggers : int
        Calls of :func:`enqueue_for_observations` merged into the job.
    created_at, due_at : datetime
        When the job was made, and when it may start.
    state : str
        One of :data:`STATES`.
    attempts : int
        Claims so far (a claim counts even when the worker then died).
    leased_until : datetime or None
        End of the running worker's lease.
    worker : str or None
        Name of the worker that claimed it last.
    last_error : str or None
        Why the last attempt failed.
    outcome : str or None
        ``"new_version"`` or ``"unchanged"`` once done.
    version_id : str or None
        Twin version made (or found current) by the job.
    finished_at : datetime or None
        When it became done or failed.
    """

    job_id: int
    pseudonym: str
    model: str
    reason: str
    n_triggers: int
    created_at: dt.datetime
    due_at: dt.datetime
    state: str
    attempts: int
    leased_until: dt.datetime | None = None
    worker: str | None = None
    last_error: str | None = None
    outcome: str | None = None
    version_id: str | None = None
    finished_at: dt.datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping, instants as ISO 8601 text."""
        return {
            k: v.isoformat() if isinstance(v, dt.datetime) else v
            for k, v in asdict(self).items()
        }


class LeaseLost(StoreError):
    """The worker no longer holds the job (its lease expired and it was reclaimed)."""


def store_lock(store: TwinStore) -> threading.RLock:
    """The lock serialising this store object's use by the scheduler.

    Hold it around any other use of a store object that scheduler threads
    share (a DuckDB connection must not be used by two threads at once).
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.get(store)
        if lock is None:
            lock = _LOCKS[store] = threading.RLock()
        return lock


def is_postgres(store: TwinStore) -> bool:
    """Whether ``store`` is a PostgreSQL store."""
    return is_postgres_url(store.path)


def utc_now() -> dt.datetime:
    """The current instant, UTC."""
    return dt.datetime.now(dt.UTC)


def _aware(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return utc_now()
    if now.tzinfo is None:
        raise DataError(f"now={now.isoformat()} has no time zone; pass a UTC instant")
    return now.astimezone(dt.UTC)


def queue_errors(function):
    """Turn DuckDB errors into StoreError naming the store (PostgreSQL's already are)."""

    @functools.wraps(function)
    def wrapper(store: TwinStore, *args, **kwargs):
        try:
            return function(store, *args, **kwargs)
        except duckdb.Error as exc:
            raise StoreError(f"store {store.path}: update queue: {exc}") from exc

    return wrapper


@contextlib.contextmanager
def queue_transaction(store: TwinStore, *, queue_lock: bool = True) -> Iterator[Any]:
    """One transaction on ``store`` holding the store lock (and the queue lock).

    ``queue_lock=False`` leaves PostgreSQL's queue lock out, for updates of a
    row the worker holds (row locks order those against a reclaim).
    """
    with store_lock(store):
        con = store.con
        con.begin()
        try:
            if queue_lock and is_postgres(store):
                con.execute("SELECT pg_advisory_xact_lock(?)", [QUEUE_LOCK])
            yield con
        except BaseException:
            con.rollback()
            raise
        con.commit()


def queue_table_exists(store: TwinStore) -> bool:
    """Whether the store's database has the queue table (checked, not created)."""
    row = store.con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_name = ?",
        [QUEUE_TABLE],
    ).fetchall()[0]
    return row[0] > 0


@queue_errors
def ensure_queue(store: TwinStore) -> None:
    """Create the queue table in the store's database unless it is there."""
    if store in _READY:
        return
    with queue_transaction(store) as con:
        if not queue_table_exists(store):
            for statement in _DDL:
                con.execute(statement)
    _READY.add(store)


@queue_errors
def enqueue_for_observations(
    store: TwinStore,
    pseudonym: str,
    quantities: Iterable[str],
    now: dt.datetime | None = None,
    *,
    rules: Sequence[UpdateRule] = UPDATE_RULES,
) -> list[int]:
    """Schedule the recalibrations that new observations of a patient call for.

    Parameters
    ----------
    store : TwinStore
        The store the observations were written to (DuckDB or PostgreSQL).
    pseudonym : str
        The patient.
    quantities : iterable of str
        Kinds of the new data: observation quantities and event kinds.
    now : datetime, optional
        Arrival instant (timezone-aware); defaults to the current time.
    rules : sequence of UpdateRule
        The recalibration table; :data:`~cartwin.scheduler.rules.UPDATE_RULES`.

    Returns
    -------
    list of int
        Ids of the jobs created or joined, one per triggered rule.

    Notes
    -----
    Call it after the import committed and before acknowledging the data to
    the sender: a sender that gets no acknowledgement sends again, the import
    is then recognised (``already_imported``) and this call schedules the work
    that a crash between the two steps lost.
    """
    if not looks_like_pseudonym(str(pseudonym)):
        raise DataError(
            f"enqueue: {pseudonym!r} is not a pseudonym (16 lower-case hex digits)"
        )
    hits = triggered(quantities, rules)
    if not hits:
        return []
    now = _aware(now)
    ensure_queue(store)
    with queue_transaction(store) as con:
        return [_enqueue_one(con, pseudonym, rule, kinds, now) for rule, kinds in hits]


def enqueue_for_records(
    store: TwinStore,
    records: Iterable[PatientRecord],
    now: dt.datetime | None = None,
    *,
    rules: Sequence[UpdateRule] = UPDATE_RULES,
) -> dict[str, list[int]]:
    """:func:`enqueue_for_observations` for every patient of an import.

    The kinds of each patient are its records' observation quantities and
    event kinds (:func:`~cartwin.scheduler.rules.observation_kinds`). Returns
    ``{pseudonym: job ids}`` for the patients whose data triggered a rule.
    """
    jobs = {}
    for pseudonym, kinds in observation_kinds(records).items():
        ids = enqueue_for_observations(store, pseudonym, kinds, now, rules=rules)
        if ids:
            jobs[pseudonym] = ids
    return jobs


def _enqueue_one(con, pseudonym: str, rule: UpdateRule, kinds: list, now) -> int:
    rows = con.execute(
        "SELECT job_id, reason FROM pending_update WHERE pseudonym = ? "
        "AND model = ? AND state = 'pending' ORDER BY job_id LIMIT 1",
        [pseudonym, rule.model],
    ).fetchall()
    if rows:
        job_id, reason = rows[0]
        merged = ",".join(sorted(set(reason.split(",")) | set(kinds)))
        con.execute(
            "UPDATE pending_update SET n_triggers = n_triggers + 1, reason = ? "
            "WHERE job_id = ?",
            [merged, job_id],
        )
        return int(job_id)
    due = now + dt.timedelta(seconds=rule.window_s)
    (job_id,) = con.execute(
        "INSERT INTO pending_update (pseudonym, model, reason, n_triggers, "
        "created_at, due_at, state, attempts) "
        "VALUES (?, ?, ?, 1, ?, ?, 'pending', 0) RETURNING job_id",
        [pseudonym, rule.model, ",".join(kinds), now, due],
    ).fetchall()[0]
    return int(job_id)


def _job(row: Sequence) -> Job:
    return Job(*row)


@queue_errors
def claim_job(
    store: TwinStore,
    *,
    worker: str,
    now: dt.datetime | None = None,
    lease_s: float = 300.0,
    max_attempts: int = 5,
) -> Job | None:
    """Take the next due job for ``worker``, or ``None`` when nothing is due.

    A job is due when pending with ``due_at <= now``, or running with an
    expired lease (its worker died). Jobs of a patient with a job running
    under a live lease are left for later. A running job whose lease expired
    after ``max_attempts`` claims is marked failed instead of claimed again.
    """
    now = _aware(now)
    ensure_queue(store)
    with queue_transaction(store) as con:
        _fail_exhausted(con, now, max_attempts)
        rows = con.execute(
            f"SELECT {JOB_COLUMNS} FROM pending_update j WHERE "
            "((state = 'pending' AND due_at <= ?) OR "
            " (state = 'running' AND leased_until <= ?)) "
            "AND NOT EXISTS (SELECT 1 FROM pending_update r WHERE "
            " r.pseudonym = j.pseudonym AND r.state = 'running' "
            " AND r.leased_until > ?) "
            "ORDER BY due_at, job_id LIMIT 1",
            [now, now, now],
        ).fetchall()
        if not rows:
            return None
        job = _job(rows[0])
        lease = now + dt.timedelta(seconds=lease_s)
        con.execute(
            "UPDATE pending_update SET state = 'running', attempts = attempts + 1, "
            "leased_until = ?, worker = ? WHERE job_id = ?",
            [lease, worker, job.job_id],
        )
    return replace(
        job, state="running", attempts=job.attempts + 1, leased_until=lease,
        worker=worker,
    )  # fmt: skip


def _fail_exhausted(con, now: dt.datetime, max_attempts: int) -> None:
    con.execute(
        "UPDATE pending_update SET state = 'failed', finished_at = ?, "
        "leased_until = NULL, last_error = 'worker stopped during attempt ' || "
        "CAST(attempts AS VARCHAR) || ' (lease expired); no attempts left' "
        "WHERE state = 'running' AND leased_until <= ? AND attempts >= ?",
        [now, now, max_attempts],
    )


@queue_errors
def expire_leases(store: TwinStore, now: dt.datetime | None = None) -> int:
    """End the lease of every running job now; return how many there were.

    For a store only this process can write (a DuckDB file it opened): jobs
    found running were left by a process that died, so they need not wait
    for their lease to expire.
    """
    now = _aware(now)
    ensure_queue(store)
    with queue_transaction(store) as con:
        rows = con.execute(
            "UPDATE pending_update SET leased_until = ? WHERE state = 'running' "
            "RETURNING job_id",
            [now],
        ).fetchall()
    return len(rows)


def _held(job: Job) -> tuple[str, list]:
    where = (
        "WHERE job_id = ? AND state = 'running' AND worker = ? AND attempts = ? "
        "RETURNING job_id"
    )
    return where, [job.job_id, job.worker, job.attempts]


@queue_errors
def complete_job(
    store: TwinStore,
    job: Job,
    *,
    version=None,
    version_id: str | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Save ``version`` (if any) and mark ``job`` done, in one transaction.

    Parameters
    ----------
    version : TwinVersion, optional
        New twin version to append; ``None`` when the twin was current.
    version_id : str, optional
        The current version's id when ``version`` is ``None``.

    Raises
    ------
    LeaseLost
        When the job is no longer this worker's attempt; nothing is written.
    """
    now = _aware(now)
    outcome = "new_version" if version is not None else "unchanged"
    where, params = _held(job)
    with queue_transaction(store, queue_lock=False) as con:
        if version is not None:
            version_id = store.save_twin_version(version)
        done = con.execute(
            "UPDATE pending_update SET state = 'done', outcome = ?, version_id = ?, "
            "finished_at = ?, leased_until = NULL, last_error = NULL " + where,
            [outcome, version_id, now, *params],
        ).fetchall()
        if not done:
            raise LeaseLost(_lost(store, job))


@queue_errors
def fail_job(
    store: TwinStore,
    job: Job,
    error: str,
    *,
    now: dt.datetime | None = None,
    max_attempts: int = 5,
    retry_base_s: float = 10.0,
    retry_max_s: float = 3600.0,
) -> str:
    """Record a failed attempt: retry later with backoff, or give up.

    The next attempt is due ``retry_base_s * 2 ** (attempts - 1)`` seconds
    later (at most ``retry_max_s``); after ``max_attempts`` attempts the job
    is ``failed``. Returns the new state.

    Raises
    ------
    LeaseLost
        When the job is no longer this worker's attempt; nothing is written.
    """
    now = _aware(now)
    text = error[:MAX_ERROR_CHARS]
    where, params = _held(job)
    with queue_transaction(store, queue_lock=False) as con:
        if job.attempts >= max_attempts:
            state, sets, values = "failed", "finished_at = ?", [now]
        else:
            delay = min(retry_base_s * 2 ** (job.attempts - 1), retry_max_s)
            due = now + dt.timedelta(seconds=delay)
            state, sets, values = "pending", "due_at = ?", [due]
        rows = con.execute(
            f"UPDATE pending_update SET state = ?, last_error = ?, "
            f"leased_until = NULL, {sets} " + where,
            [state, text, *values, *params],
        ).fetchall()
        if not rows:
            raise LeaseLost(_lost(store, job))
    return state


def _lost(store: TwinStore, job: Job) -> str:
    return (
        f"store {store.path}: job {job.job_id} ({job.model}, patient "
        f"{job.pseudonym}) is no longer held by worker {job.worker} attempt "
        f"{job.attempts}; its lease expired and it was claimed again"
    )
