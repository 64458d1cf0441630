"""Live vital signs in, CRS alerts out: group-commit ingestion and pub/sub.

Path of one vital sign
----------------------
1. The request (``POST .../vitals`` or a WebSocket message) is validated and
   its value converted to the canonical unit; the source id is hashed.
2. It waits in a queue for the single writer. The writer takes everything
   queued (up to ``ingest_batch_max`` values) and stores it with one
   :meth:`~cartwin.store.TwinStore.append_observations` call: one short
   transaction (one multi-row ``INSERT`` and one ``import_log`` row), so a
   commit costs about the same for one value or hundreds ("group commit").
   While it commits, the next requests queue up for the next commit. Values
   already stored (same quantity, instant and source id) are found in the
   patient's live cache, which holds the key of every stored value, and are
   skipped and reported as duplicates; on PostgreSQL, where other processes
   may write, the store checks its table as well.
3. After the commit, and only then, the patients' live CRS caches
   (:mod:`cartwin.service.crs_live`) take in the new values one request at a
   time, in queue order, so the grades and alerts do not depend on how
   requests were grouped into commits. Each rise of a current grade becomes
   an alert, written to the service database, then published to the SSE
   subscribers allowed to see the patient.
4. Only then is the request answered: an acknowledged vital sign is
   committed (it survives the process being killed). When a commit fails,
   nothing of it is stored, the caches are unchanged and every request in it
   gets :class:`CommitFailed` (HTTP 503); later commits go on.

Subscribers that fall behind by ``subscriber_queue_max`` alerts are cut off
with an ``overflow`` event; they reconnect with ``Last-Event-ID`` and are
sent what they missed from the stored alerts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import functools
import gc
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cartwin.errors import CartwinError, StoreError
from cartwin.record.model import Observation
from cartwin.record.pseudonym import source_token
from cartwin.record.units import canonical_unit, to_canonical
from cartwin.service.auth import Principal
from cartwin.service.crs_live import GradeChange, LiveCrs, obs_key
from cartwin.service.db import ServiceDB

logger = logging.getLogger(__name__)

#: ``source_name`` of live imports in the store's import log.
LIVE_SOURCE = "live vitals (cartwin service)"


class PatientNotStored(StoreError):
    """Vital signs were sent for a patient the store does not hold."""


class StoreGate:
    """The store and the live CRS caches behind one lock (one writer at a time).

    DuckDB allows one writing connection per file and a
    :class:`~cartwin.store.TwinStore` is not thread-safe, so every use of the
    store in the service holds this lock.
    """

    def __init__(self, store, live: LiveCrs) -> None:
        self.store = store
        self.live = live
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def use(self) -> Iterator[Any]:
        """Hold the lock; yield the store."""
        with self._lock:
            yield self.store


def vital_observation(vital, key: bytes) -> Observation:
    """An :class:`Observation` from a validated ``VitalIn`` (canonical unit).

    Raises
    ------
    UnitError
        When the unit cannot be converted to the quantity's canonical unit.
    """
    unit = vital.unit or canonical_unit(vital.quantity)
    when = vital.time
    offset = when.utcoffset() or dt.timedelta(0)
    return Observation(
        quantity=vital.quantity,
        time=when.astimezone(dt.UTC),
        value=to_canonical(vital.value, unit, vital.quantity),
        unit=canonical_unit(vital.quantity),
        source_value=float(vital.value),
        source_unit=unit,
        source_id=source_token(vital.source_id or "", key),
        source_utc_offset_min=int(offset.total_seconds() // 60),
    )


# -- alerts -------------------------------------------------------------------
@dataclass(frozen=True)
class Alert:
    """A stored CRS alert (see :class:`~cartwin.service.models.AlertOut`)."""

    alert_id: int
    pseudonym: str
    raised_at: str
    body: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping, the shape of ``AlertOut``."""
        return {"alert_id": self.alert_id, "pseudonym": self.pseudonym,
                "raised_at": self.raised_at, **self.body}  # fmt: skip


class AlertStore:
    """CRS alerts in the service database (append-only by use)."""

    def __init__(self, db: ServiceDB) -> None:
        self.db = db

    def add(self, changes: list[GradeChange], trigger: str) -> list[Alert]:
        """Store one alert per grade change; return them with their ids."""
        if not changes:
            return []
        raised = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
        alerts = []
        with self.db.transaction() as con:
            for change in changes:
                body = _alert_body(change, trigger)
                cursor = con.execute(
                    "INSERT INTO crs_alert (pseudonym, raised_at, body) "
                    "VALUES (?, ?, ?)",
                    [change.pseudonym, raised, json.dumps(body)],
                )
                alerts.append(Alert(cursor.lastrowid, change.pseudonym, raised, body))
        return alerts

    def list(
        self, *, pseudonym: str | None = None, after: int = 0, limit: int = 1000
    ) -> list[Alert]:
        """Alerts with ``alert_id > after``, oldest first."""
        where, params = "alert_id > ?", [after]
        if pseudonym is not None:
            where += " AND pseudonym = ?"
            params.append(pseudonym)
        rows = self.db.query(
            f"SELECT alert_id, pseudonym, raised_at, body FROM crs_alert "
            f"WHERE {where} ORDER BY alert_id LIMIT ?",
            [*params, limit],
        )
        return [Alert(a, p, r, json.loads(b)) for a, p, r, b in rows]


def _alert_body(change: GradeChange, trigger: str) -> dict[str, Any]:
    point = change.point
    return {
        "grade_from": change.grade_from,
        "grade_to": change.grade_to,
        "time": point.time.isoformat(),
        "study_day": point.study_day,
        "driver": point.driver,
        "reasons": list(point.reasons),
        "trigger": trigger,
    }


@dataclass(eq=False)
class Subscription:
    """One SSE subscriber: which alerts it may get, and its queue."""

    principal: Principal
    pseudonym: str | None
    queue: asyncio.Queue
    overflowed: bool = False

    def accepts(self, alert: Alert) -> bool:
        """Whether the alert is for this subscriber (patient filter and ACL)."""
        if self.pseudonym is not None and alert.pseudonym != self.pseudonym:
            return False
        return self.principal.may_see(alert.pseudonym)


class AlertBroker:
    """Fan-out of alerts to SSE subscribers; used from the event loop only."""

    def __init__(self, queue_max: int = 1000) -> None:
        self.queue_max = queue_max
        self._subscribers: set[Subscription] = set()

    def subscribe(self, principal: Principal, pseudonym: str | None) -> Subscription:
        """Register a subscriber (all visible patients when ``pseudonym`` is None)."""
        sub = Subscription(principal, pseudonym, asyncio.Queue(self.queue_max))
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscriber (its stream ended)."""
        self._subscribers.discard(sub)

    def publish(self, alerts: list[Alert]) -> None:
        """Queue each alert for every subscriber that accepts it."""
        for alert in alerts:
            for sub in list(self._subscribers):
                if sub.overflowed or not sub.accepts(alert):
                    continue
                try:
                    sub.queue.put_nowait(alert)
                except asyncio.QueueFull:
                    sub.overflowed = True

    def close(self) -> None:
        """End every subscriber's stream."""
        for sub in list(self._subscribers):
            sub.overflowed = False
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(None)
        self._subscribers.clear()

    def __len__(self) -> int:
        return len(self._subscribers)


# -- ingestion ----------------------------------------------------------------
_FROZEN = threading.Event()


def freeze_heap() -> bool:
    """Exempt what the process made before serving from garbage collection.

    A full collection of Python's cycle collector walks every tracked object:
    with the service's modules, app and caches loaded it paused the whole
    process for 40-70 ms (4 times in a 20 s benchmark run at 500 values/s),
    which made the 99th percentile of the live latency. ``gc.freeze()`` moves
    the objects alive now to a generation the collector skips (CPython's
    advice for long-running servers), so later collections walk only what
    was made since. Done once per process (the first writer started);
    objects made before then are freed by reference counting only: a cycle
    among them becomes unreachable garbage that is never reclaimed.

    Returns
    -------
    bool
        Whether this call froze the heap (False after the first time).
    """
    if _FROZEN.is_set():
        return False
    _FROZEN.set()
    gc.collect()
    gc.freeze()
    return True


class CommitFailed(StoreError):
    """A group commit failed: nothing of the requests in it was stored.

    Every request of the failed commit gets this error; the values may be
    sent again (a value stored meanwhile is reported as a duplicate).
    """


@dataclass(frozen=True)
class IngestResult:
    """Outcome of one submission (see :class:`~cartwin.service.models.VitalsResult`)."""

    pseudonym: str
    received: int
    stored: int
    duplicates: int
    crs_grade: int | None
    alerts: tuple[int, ...] = ()


@dataclass
class _Pending:
    pseudonym: str
    observations: list[Observation]
    future: asyncio.Future
    new: list[Observation] = field(default_factory=list)
    error: Exception | None = None
    change: GradeChange | None = None
    grade: int | None = None


@dataclass
class _Batch:
    items: list[_Pending]
    new: dict[str, list[Observation]] = field(default_factory=dict)
    #: Whether the store must skip values it holds (a patient without cache).
    check_stored: bool = False


def _not_in(pending: list[Observation], observations: list) -> list[Observation]:
    """``observations`` neither in ``pending`` nor repeated (the store's rule)."""
    seen, new = {obs_key(o) for o in pending}, []
    for obs in observations:
        if obs_key(obs) not in seen:
            seen.add(obs_key(obs))
            new.append(obs)
    return new


class VitalsIngestor:
    """Single writer storing queued vital signs in group commits.

    Parameters
    ----------
    gate : StoreGate
        Store and live CRS caches.
    alerts : AlertStore
        Where alerts are stored.
    broker : AlertBroker
        Where alerts are published.
    batch_max : int
        Most observations stored in one commit.

    Attributes
    ----------
    commits : int
        Group commits attempted (failed ones included).
    before_commit : callable or None
        Fault-injection hook for tests: called in the writer thread with the
        batch (pseudonym to new observations) after its rows are written,
        inside the store transaction; an exception from it fails the whole
        commit (nothing stored; every request of the batch gets
        :class:`CommitFailed`), a delay from it holds the commit back.
    """

    def __init__(
        self, gate: StoreGate, alerts: AlertStore, broker: AlertBroker, batch_max: int
    ) -> None:
        self.gate = gate
        self.alerts = alerts
        self.broker = broker
        self.batch_max = batch_max
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.commits = 0
        self.before_commit: Callable[[dict[str, list[Observation]]], None] | None = None

    def _ensure_started(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.get_loop() is not loop or self._task.done():
            self._queue = asyncio.Queue()
            self._executor = self._executor or concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="cartwin-ingest"
            )
            self._task = loop.create_task(self._run(self._queue))
        return self._queue

    async def start(self) -> None:
        """Start the writer in the running event loop (see :func:`freeze_heap`)."""
        freeze_heap()
        self._ensure_started()

    async def stop(self) -> None:
        """Store what is queued, then stop the writer."""
        if self._task is None or self._queue is None:
            return
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def close(self) -> None:
        """Release the writer thread (after :meth:`stop`)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(
        self, pseudonym: str, observations: list[Observation]
    ) -> IngestResult:
        """Queue one request's observations; return once they are committed.

        Submissions are stored and graded in the order they were queued,
        however they are grouped into commits.

        Raises
        ------
        PatientNotStored
            When the patient is not in the store (nothing stored).
        CommitFailed
            When the group commit failed (nothing of that commit was stored).
        """
        queue = self._ensure_started()
        future = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Pending(pseudonym, list(observations), future))
        return await future

    async def _run(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        running = True
        while running:
            first = await queue.get()
            if first is None:
                break
            items, size = [first], len(first.observations)
            while size < self.batch_max and not queue.empty():
                item = queue.get_nowait()
                if item is None:
                    running = False
                    break
                items.append(item)
                size += len(item.observations)
            await self._process(loop, items)

    async def _process(self, loop, items: list[_Pending]) -> None:
        try:
            results, alerts = await loop.run_in_executor(
                self._executor, self._commit, items
            )
        except Exception as exc:  # the whole commit failed: nothing stored
            logger.error("commit of %d live submissions failed: %s", len(items), exc)
            message = (
                f"the commit of {len(items)} live submissions failed "
                f"({type(exc).__name__}); none of their values was stored; send "
                "them again"
            )
            for item in items:
                if not item.future.done():
                    item.future.set_exception(CommitFailed(message))
            return
        self.broker.publish(alerts)
        for item, result in zip(items, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, Exception):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    def _commit(self, items: list[_Pending]) -> tuple[list, list[Alert]]:
        """Store a batch, then grade it item by item (runs in the writer thread).

        The caches change only after the commit succeeded, so a failed commit
        leaves them as they were and its values can be sent again.
        """
        batch = _Batch(items)
        self.commits += 1
        with self.gate.use() as store:
            for item in items:
                self._select_new(store, batch, item)
            if batch.new:
                self._write(store, batch)
            for item in items:
                self._grade_item(store, item)
            raised = [item for item in items if item.change is not None]
            alerts = self.alerts.add([item.change for item in raised], "vitals")
        mine = {id(item): alert.alert_id for item, alert in zip(raised, alerts)}
        results = [self._result(item, mine.get(id(item))) for item in items]
        return results, alerts

    def _select_new(self, store, batch: _Batch, item: _Pending) -> None:
        """Keep the item's values neither stored nor queued earlier in the batch."""
        if item.pseudonym not in self.gate.live:
            try:
                store.resolve_patient(item.pseudonym)
            except StoreError:
                item.error = PatientNotStored(
                    f"patient {item.pseudonym} is not in the store; import its "
                    "data first"
                )
                return
        pending = batch.new.get(item.pseudonym, [])
        try:
            state = self.gate.live.get(store, item.pseudonym)
        except CartwinError as exc:
            # The patient's data cannot be graded: its values are stored all
            # the same, and the store itself skips those it holds already.
            logger.warning(
                "live CRS cache of patient %s cannot be built (%s); its values "
                "are stored and checked against the store",
                item.pseudonym, type(exc).__name__,
            )  # fmt: skip
            batch.check_stored = True
            item.new = _not_in(pending, item.observations)
        else:
            item.new = state.fresh(pending + item.observations)[len(pending) :]
        if item.new:
            batch.new[item.pseudonym] = pending + item.new

    def _write(self, store, batch: _Batch) -> None:
        """Append the batch in one transaction (see ``append_observations``).

        The live caches hold every stored key of their patients. On DuckDB the
        service holds the store's only writer, so the store need not look for
        stored copies (a scan of the whole ``measurement`` table); on
        PostgreSQL other processes may write, so it does, as it does for a
        patient without cache. Values it finds stored count as duplicates of
        their request, and the caches of their patients are rebuilt from the
        store.
        """
        hook = self.before_commit
        check = batch.check_stored or not store.sole_writer
        summary = store.append_observations(
            batch.new, source_name=LIVE_SOURCE, check_stored=check,
            before_commit=None if hook is None else functools.partial(hook, batch.new),
        )  # fmt: skip
        if summary.stored_before:
            logger.warning(
                "live commit found %d of its values stored already (another "
                "writer); rebuilding their patients' caches",
                len(summary.stored_before),
            )
            self._rebuild(store, batch, set(summary.stored_before))

    def _rebuild(self, store, batch: _Batch, stored_before: set) -> None:
        """Drop values stored already from their items; reload those patients.

        A rise of a reloaded patient's grade goes to its last item in the batch.
        """
        affected = set()
        for item in batch.items:
            kept = [
                o
                for o in item.new
                if (item.pseudonym, *obs_key(o)) not in stored_before
            ]
            if len(kept) < len(item.new):
                affected.add(item.pseudonym)
            item.new = kept
        last = {item.pseudonym: item for item in batch.items}
        for pseudonym in affected:
            try:
                last[pseudonym].change = self.gate.live.reload(store, pseudonym)
            except CartwinError:
                self.gate.live.drop(pseudonym)

    def _grade_item(self, store, item: _Pending) -> None:
        """Take in one item's stored values (queue order); note the grade after it."""
        if item.error is not None:
            return
        try:
            # Values the cache already holds were read back from the store
            # when it was rebuilt during this batch; they are not applied twice.
            fresh = self.gate.live.get(store, item.pseudonym).fresh(item.new)
        except CartwinError:
            fresh = []  # the patient cannot be graded; item.grade stays None
        if fresh:
            item.change = self._grade(store, item.pseudonym, fresh)
        try:
            item.grade, _ = self.gate.live.get(store, item.pseudonym).current()
        except CartwinError:
            item.grade = None

    def _grade(self, store, pseudonym: str, stored: list) -> GradeChange | None:
        """Re-grade after a commit; a grading failure never undoes the storing."""
        try:
            return self.gate.live.get(store, pseudonym).apply(stored)
        except CartwinError as exc:
            logger.warning(
                "live CRS grading of patient %s failed (%s); values are stored, "
                "its grade is unknown until the data are fixed",
                pseudonym, type(exc).__name__,
            )  # fmt: skip
            self.gate.live.drop(pseudonym)
            return None

    def _result(self, item: _Pending, alert_id: int | None) -> IngestResult | Exception:
        if item.error is not None:
            return item.error
        received, stored = len(item.observations), len(item.new)
        alerts = () if alert_id is None else (alert_id,)
        return IngestResult(
            item.pseudonym, received, stored, received - stored, item.grade, alerts
        )
