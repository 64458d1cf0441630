"""Live vital signs in, CRS alerts out: group-commit ingestion and pub/sub.

Path of one vital sign
----------------------
1. The request (``POST .../vitals`` or a WebSocket message) is validated and
   its value converted to the canonical unit; the source id is hashed.
2. It waits in a queue for the single writer. The writer takes everything
   queued (up to ``ingest_batch_max`` values) and stores it with one
   ``TwinStore.import_records`` call: one transaction, so a commit costs the
   same for one value or hundreds ("group commit"). Values already stored
   (same quantity, instant and source id) are skipped and reported as
   duplicates.
3. After the commit the patients' live CRS caches
   (:mod:`cartwin.service.crs_live`) are re-graded; each rise of a current
   grade becomes an alert, written to the service database, then published
   to the SSE subscribers allowed to see the patient.
4. Only then is the request answered: an acknowledged vital sign is stored.

Subscribers that fall behind by ``subscriber_queue_max`` alerts are cut off
with an ``overflow`` event; they reconnect with ``Last-Event-ID`` and are
sent what they missed from the stored alerts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cartwin.errors import CartwinError, StoreError
from cartwin.record.model import Observation, PatientFacts, PatientRecord
from cartwin.record.pseudonym import source_token
from cartwin.record.units import canonical_unit, to_canonical
from cartwin.service.auth import Principal
from cartwin.service.crs_live import GradeChange, LiveCrs
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
    stored: int = 0
    error: Exception | None = None


@dataclass
class _Batch:
    items: list[_Pending]
    new: dict[str, list[Observation]] = field(default_factory=dict)


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
        """Start the writer in the running event loop."""
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
        """Queue one request's observations; return once they are stored.

        Raises
        ------
        PatientNotStored
            When the patient is not in the store (nothing stored).
        StoreError
            When the commit failed (nothing of that commit was stored).
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
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
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
        """Store a batch and re-grade (runs in the writer thread)."""
        batch = _Batch(items)
        with self.gate.use() as store:
            for item in items:
                self._select_new(store, batch, item)
            changes = self._write(store, batch) if batch.new else []
            changes += [self._grade(store, p, obs) for p, obs in batch.new.items()]
            alerts = self.alerts.add([c for c in changes if c is not None], "vitals")
            results = [self._result(store, item, alerts) for item in items]
        self.commits += 1
        return results, alerts

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

    def _select_new(self, store, batch: _Batch, item: _Pending) -> None:
        if item.pseudonym not in self.gate.live:
            try:
                store.resolve_patient(item.pseudonym)
            except StoreError:
                item.error = PatientNotStored(
                    f"patient {item.pseudonym} is not in the store; import its "
                    "data first"
                )
                return
        state = self.gate.live.get(store, item.pseudonym)
        pending = batch.new.get(item.pseudonym, [])
        new = state.fresh(pending + item.observations)[len(pending) :]
        item.stored = len(new)
        if new:
            batch.new[item.pseudonym] = pending + new

    def _write(self, store, batch: _Batch) -> list[GradeChange | None]:
        records = [
            PatientRecord(PatientFacts(pseudonym), observations=tuple(obs))
            for pseudonym, obs in batch.new.items()
        ]
        expected = sum(len(obs) for obs in batch.new.values())
        summary = store.import_records(
            records, source_name=LIVE_SOURCE, source_sha256=_batch_digest(batch)
        )
        if summary.n_observations != expected:  # cache and store disagree
            logger.warning(
                "live commit stored %d of %d new observations; rebuilding caches",
                summary.n_observations, expected,
            )  # fmt: skip
            changes = [self.gate.live.reload(store, p) for p in batch.new]
            batch.new.clear()
            return changes
        return []

    def _result(
        self, store, item: _Pending, alerts: list[Alert]
    ) -> IngestResult | Exception:
        if item.error is not None:
            return item.error
        try:
            grade, _ = self.gate.live.get(store, item.pseudonym).current()
        except CartwinError:
            grade = None
        mine = tuple(a.alert_id for a in alerts if a.pseudonym == item.pseudonym)
        received = len(item.observations)
        return IngestResult(
            item.pseudonym, received, item.stored, received - item.stored, grade, mine
        )


def _batch_digest(batch: _Batch) -> str:
    """SHA-256 naming one live commit in the import log (unique per commit)."""
    digest = hashlib.sha256(str(time.time_ns()).encode())
    for pseudonym, observations in sorted(batch.new.items()):
        for obs in observations:
            line = f"{pseudonym}|{obs.quantity}|{obs.time.isoformat()}|{obs.source_id}"
            digest.update(line.encode("utf-8"))
    return digest.hexdigest()
