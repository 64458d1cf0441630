"""Group commit of live vital signs: stored once, answered after commit, in order.

The live writer (:class:`cartwin.service.stream.VitalsIngestor`) stores all
queued vital signs in one short transaction
(:meth:`cartwin.store.TwinStore.append_observations`) and answers each request
only after that commit. These tests check what a client may rely on:

* concurrent posts from many clients are each stored exactly once, and none
  is acknowledged before the commit that stored it;
* a failed commit stores none of its requests, answers each of them with 503
  ``not-stored`` (HTTP and WebSocket), leaves the live caches untouched (the
  values can be sent again) and later commits go on;
* a patient's values are graded one request at a time in queue order, so two
  requests that share a commit raise the same alerts as two commits would
  (ASTCT CRS: fever T >= 38 °C is grade 1, SBP < 90 mmHg with fever grade 2;
  Lee et al. 2019, doi:10.1016/j.bbmt.2018.12.758);
* a server killed with SIGKILL during a burst loses no acknowledged value;
* the append path stores rows that read back like imported ones, on DuckDB
  and on PostgreSQL.

All traffic goes to servers on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
from service_samples import KEY, T0, TestClient, at, auth, bundle, pseudonym, vital
from websockets.sync.client import connect

from cartwin.errors import StoreError
from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.scores import crs_timeline
from cartwin.service import ServiceSettings, create_app
from cartwin.service.loopback import LoopbackServer
from cartwin.store import ImportSummary, open_store

FHIR_JSON = "application/fhir+json"
VITALS_ROUTE = "/v1/patients/{pseudonym}/vitals"


def _settings(store: str, tmp_path, **extra) -> ServiceSettings:
    return ServiceSettings(
        store=store, pseudonym_key=KEY, security_db=str(tmp_path / "svc.sqlite3"),
        rate_limit_per_second=10_000, rate_limit_burst=10_000, **extra,
    )  # fmt: skip


def _import(client, token: str, *source_ids: str) -> None:
    for source_id in source_ids:
        response = client.post(
            "/v1/imports/fhir", content=bundle(source_id),
            headers={**auth(token), "Content-Type": FHIR_JSON},
        )  # fmt: skip
        assert response.status_code == 201, response.text


@pytest.fixture
def served(tmp_path):
    """A served app on DuckDB with patients P-A and P-B; its write token."""
    app = create_app(_settings(str(tmp_path / "twin.duckdb"), tmp_path))
    token = app.state.service.tokens.create("write")[0]
    with LoopbackServer(app) as server:
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            _import(client, token, "P-A", "P-B")
        yield server, app, token
    app.state.service.close()


def _key(pseudonym_: str, when: str) -> tuple[str, dt.datetime]:
    return pseudonym_, dt.datetime.fromisoformat(when).astimezone(dt.UTC)


def _stored_times(app, pseudonym_: str, quantity: str) -> list[dt.datetime]:
    with app.state.service.gate.use() as store:
        record = store.load_record(pseudonym_)
    return [o.time for o in record.observations if o.quantity == quantity]


async def _post_all(
    url: str, token: str, jobs: list, clients: int, on_answer=None
) -> list:
    """Post ``(pseudonym, body)`` jobs from ``clients`` clients at once.

    ``on_answer(pseudonym, body, response)`` is called as each answer arrives.
    """
    pools = [httpx.AsyncClient(base_url=url, timeout=20.0) for _ in range(clients)]

    async def one(index: int, pseudonym_: str, body: dict):
        client = pools[index % clients]
        path = VITALS_ROUTE.format(pseudonym=pseudonym_)
        response = await client.post(path, json=body, headers=auth(token))
        if on_answer is not None:
            on_answer(pseudonym_, body, response)
        return pseudonym_, body, response

    try:
        return await asyncio.gather(*(one(i, *job) for i, job in enumerate(jobs)))
    finally:
        for pool in pools:
            await pool.aclose()


class CommitSpy:
    """``before_commit`` hook: records each batch, optionally delays or fails it.

    The keys are (pseudonym, UTC instant) of the values in the batch. The hook
    runs in the writer thread inside the store transaction, before the commit.
    """

    def __init__(self, delay: float = 0.0, fail_when=None) -> None:
        self.delay, self.fail_when = delay, fail_when
        self.batches: list[set] = []
        self.failed: list[set] = []
        self.acked: set = set()
        self.acked_early: set = set()
        self.lock = threading.Lock()

    def __call__(self, batch: dict) -> None:
        keys = {(p, o.time) for p, observations in batch.items() for o in observations}
        with self.lock:
            self.batches.append(keys)
            self.acked_early |= keys & self.acked
        time.sleep(self.delay)  # room for a premature answer to reach the client
        if self.fail_when is not None and self.fail_when(keys):
            self.failed.append(keys)
            raise StoreError("injected commit failure (test)")

    def ack(self, key) -> None:
        with self.lock:
            self.acked.add(key)


def test_concurrent_posts_stored_once_and_acknowledged_after_commit(served):
    server, app, token = served
    spy = CommitSpy(delay=0.01)
    app.state.service.ingestor.before_commit = spy
    patients = [pseudonym("P-A"), pseudonym("P-B")]
    # 40 heart rates per patient, each posted twice by different clients.
    values = [
        (p, vital("heart_rate", 60 + i % 40, 50 + i / 4, source_id=f"hr-{i}"))
        for i in range(40) for p in patients
    ]  # fmt: skip
    jobs = [job for pair in zip(values, values[::-1], strict=True) for job in pair]

    def on_answer(p: str, body: dict, response) -> None:
        if response.status_code == 200:
            spy.ack(_key(p, body["time"]))

    started = app.state.service.ingestor.commits
    results = asyncio.run(_post_all(server.url, token, jobs, 8, on_answer))
    assert all(r.status_code == 200 for _, _, r in results)
    assert not spy.acked_early  # no answer before its commit
    stored = sum(r.json()["stored"] for _, _, r in results)
    duplicates = sum(r.json()["duplicates"] for _, _, r in results)
    assert (stored, duplicates) == (80, 80)
    for p in patients:
        times = _stored_times(app, p, "heart_rate")
        assert len(times) == len(set(times)) == 40
    commits = app.state.service.ingestor.commits - started
    # Grouped; a commit whose values were all duplicates writes nothing.
    assert len(spy.batches) <= commits < len(jobs)
    assert sum(len(b) for b in spy.batches) == 80  # each value written once
    rows = app.state.service.audit.entries(limit=10_000)
    posted = [r for r in rows if r.route == VITALS_ROUTE and r.method == "POST"]
    assert len(posted) == len(jobs) and {r.status for r in posted} == {200}


def test_failed_commit_stores_none_of_its_requests(served):
    server, app, token = served
    a = pseudonym("P-A")
    poison = _key(a, at(60))
    spy = CommitSpy(delay=0.03, fail_when=lambda keys: poison in keys)
    app.state.service.ingestor.before_commit = spy
    jobs = [(a, vital("heart_rate", 70, 55 + i / 4)) for i in range(20)]
    jobs.insert(8, (a, vital("temperature", 39.2, 60)))  # the poison value
    results = asyncio.run(_post_all(server.url, token, jobs, clients=4))
    failed = spy.failed[0]
    assert (
        len(spy.failed) == len([b for b in spy.batches if poison in b])
        and len(failed) >= 2
    )  # several requests shared the failed commit
    for p, body, response in results:
        if _key(p, body["time"]) in failed:
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "not-stored"
        else:
            assert response.status_code == 200 and response.json()["stored"] == 1
    stored = set(
        _stored_times(app, a, "heart_rate") + _stored_times(app, a, "temperature")
    )
    sent = {_key(p, body["time"])[1] for p, body in jobs}
    assert stored == sent - {when for _, when in failed}
    # The caches were left as they were: the failed values are new when resent.
    spy.fail_when = None
    again = [(p, body) for p, body in jobs if _key(p, body["time"]) in failed]
    resent = asyncio.run(_post_all(server.url, token, again, clients=2))
    assert [r.json()["stored"] for _, _, r in resent] == [1] * len(again)
    assert any(r.json()["crs_grade"] == 1 for _, _, r in resent)  # the fever
    assert len(_stored_times(app, a, "heart_rate")) == 20


def test_failed_commit_answers_websocket_message(served):
    server, app, token = served
    b = pseudonym("P-B")
    spy = CommitSpy(fail_when=lambda keys: len(spy.failed) == 0)
    app.state.service.ingestor.before_commit = spy
    url = server.url.replace("http", "ws") + "/v1/vitals/ws"
    message = json.dumps({**vital("spo2", 93, 70), "patient": b})
    with connect(url, additional_headers=auth(token), open_timeout=5) as ws:
        ws.send(message)
        first = json.loads(ws.recv(timeout=5))
        ws.send(message)
        second = json.loads(ws.recv(timeout=5))
    assert first["error"]["status"] == 503 and first["error"]["code"] == "not-stored"
    assert second["results"][0]["stored"] == 1
    rows = [r for r in app.state.service.audit.entries() if r.method == "WS"]
    assert [r.status for r in rows] == [101, 503, 200]


def test_requests_sharing_a_commit_are_graded_in_queue_order(tmp_path):
    app = create_app(_settings(str(tmp_path / "twin.duckdb"), tmp_path))
    state = app.state.service
    token = state.tokens.create("write")[0]
    with TestClient(app) as client:
        _import(client, token, "P-A")
    a = pseudonym("P-A")
    fever = Observation("temperature", T0 + dt.timedelta(hours=20), 38.6, "Cel")
    low_bp = Observation("systolic_bp", T0 + dt.timedelta(hours=21), 85.0, "mm[Hg]")
    pulse = Observation("heart_rate", T0 + dt.timedelta(hours=19), 90.0, "/min")

    async def run() -> list:
        try:
            submits = [state.ingestor.submit(a, [o]) for o in (fever, low_bp, pulse)]
            return await asyncio.gather(*submits)
        finally:
            await state.ingestor.stop()

    before = state.ingestor.commits
    results = asyncio.run(run())
    assert state.ingestor.commits - before == 1  # the three shared one commit
    # Graded request by request: fever (grade 1), then hypotension (grade 2).
    assert [r.crs_grade for r in results] == [1, 2, 2]
    alerts = state.alerts.list(pseudonym=a)
    assert [(x.body["grade_from"], x.body["grade_to"]) for x in alerts] == [
        (0, 1), (1, 2),
    ]  # fmt: skip
    assert [r.alerts for r in results] == [
        (alerts[0].alert_id,), (alerts[1].alert_id,), (),
    ]  # fmt: skip
    with state.gate.use() as store:
        order = store.con.execute(
            "SELECT cartwin_quantity FROM measurement ORDER BY measurement_id"
        ).fetchall()
        record = store.load_record(a)
        cached = state.gate.live.get(store, a).timeline()
    # Ids within a commit follow time order, as an import gives them.
    assert [q for (q,) in order] == ["heart_rate", "temperature", "systolic_bp"]
    assert cached.points == crs_timeline(record).points
    state.close()


def test_patient_that_cannot_be_graded_is_stored_once(tmp_path, caplog):
    # An oxygen event of unknown delivery ("snorkel") makes the ASTCT grading
    # refuse the record: the live cache cannot be built, so the duplicate check
    # falls to the store, and the values are stored without a grade.
    app = create_app(_settings(str(tmp_path / "twin.duckdb"), tmp_path))
    state = app.state.service
    token = state.tokens.create("write")[0]
    c = pseudonym("P-C")
    events = (
        Event("infusion", T0, name="tisagenlecleucel"),
        Event("oxygen", T0 + dt.timedelta(hours=2), T0 + dt.timedelta(hours=3),
              detail="snorkel"),
    )  # fmt: skip
    with state.gate.use() as store:
        store.import_records(
            [PatientRecord(PatientFacts(c), events=events)],
            source_name="bad", source_sha256=hashlib.sha256(b"bad").hexdigest(),
        )  # fmt: skip
    path, body = VITALS_ROUTE.format(pseudonym=c), vital("temperature", 38.9, 5)
    with TestClient(app) as client:
        answers = [client.post(path, json=body, headers=auth(token)) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    assert [(a.json()["stored"], a.json()["crs_grade"]) for a in answers[:1]] == [
        (1, None)
    ]
    assert answers[1].json()["duplicates"] == 1
    assert _stored_times(app, c, "temperature") == [T0 + dt.timedelta(hours=5)]
    assert "cannot be built" in caplog.text
    state.close()


def test_sse_sends_queued_alerts_in_one_write_then_overflow():
    # A subscriber whose queue (2 alerts) overflows gets what was queued, in
    # one write, then an overflow event naming the last id it got, then the end.
    from cartwin.service.auth import Principal, Scope
    from cartwin.service.routes_stream import _events
    from cartwin.service.stream import Alert, AlertBroker

    broker = AlertBroker(queue_max=2)
    state = SimpleNamespace(
        settings=SimpleNamespace(sse_keepalive_seconds=5.0), broker=broker
    )
    alerts = [Alert(i, pseudonym("P-A"), at(i), {"grade_to": 1}) for i in (7, 8, 9)]

    async def read() -> list[str]:
        sub = broker.subscribe(Principal("abcd1234", Scope.READ), None)
        broker.publish(alerts)  # the third does not fit: overflow
        return [chunk async for chunk in _events(state, sub, None)]

    chunks = asyncio.run(read())
    assert chunks[0].startswith("retry: 2000")
    assert [line for line in chunks[1].split("\n") if line.startswith("id:")] == [
        "id: 7", "id: 8",
    ]  # fmt: skip
    assert chunks[2].startswith("event: overflow") and '"last_event_id": 8' in chunks[2]
    assert len(chunks) == 3 and len(broker) == 0


# -- SIGKILL ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(tmp_path, store: str) -> tuple[subprocess.Popen, str, str]:
    from cartwin.service.auth import TokenRegistry
    from cartwin.service.db import ServiceDB

    db = ServiceDB(store + ".service.sqlite3")
    token = TokenRegistry(db).create("write")[0]
    db.close()
    port = _free_port()
    env = {
        **os.environ, "CARTWIN_PSEUDONYM_KEY": KEY.decode(),
        "CARTWIN_SERVICE_RATE_LIMIT_PER_SECOND": "10000",
        "CARTWIN_SERVICE_RATE_LIMIT_BURST": "10000",
    }  # fmt: skip
    command = [sys.executable, "-m", "cartwin.service.cli", "serve", "--store", store,
               "--port", str(port), "--log-level", "warning"]  # fmt: skip
    return subprocess.Popen(command, env=env), f"http://127.0.0.1:{port}", token


def _wait_up(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited"
        try:
            if httpx.get(url + "/v1/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("server did not start within 30 s")


async def _burst_then_kill(url: str, token: str, process, kill_after: int) -> tuple:
    """Post values 64 at a time; SIGKILL the server after ``kill_after`` answers."""
    a, acked, lost = pseudonym("P-A"), [], 0
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:

        async def one(i: int) -> None:
            nonlocal lost
            body = vital("heart_rate", 70, 100 + i / 60, source_id=f"k-{i}")
            try:
                response = await client.post(
                    VITALS_ROUTE.format(pseudonym=a), json=body, headers=auth(token)
                )
            except httpx.TransportError:
                lost += 1
                return
            assert response.status_code == 200
            acked.append(_key(a, body["time"])[1])
            if len(acked) == kill_after:
                os.kill(process.pid, signal.SIGKILL)

        await asyncio.gather(*(one(i) for i in range(4 * kill_after)))
    return acked, lost


def test_sigkill_during_burst_loses_no_acknowledged_value(tmp_path):
    store = str(tmp_path / "twin.duckdb")
    process, url, token = _serve(tmp_path, store)
    try:
        _wait_up(url, process)
        with httpx.Client(base_url=url, timeout=10) as client:
            _import(client, token, "P-A")
        acked, lost = asyncio.run(_burst_then_kill(url, token, process, 80))
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert len(acked) >= 80 and lost > 0  # killed with requests in flight
    with open_store(store) as reopened:
        times = [
            o.time for o in reopened.load_record(pseudonym("P-A")).observations
            if o.quantity == "heart_rate"
        ]  # fmt: skip
    assert set(acked) <= set(times) and len(times) == len(set(times))


# -- the store's append path ----------------------------------------------------
A, B, ABSENT = "0123456789abcdef", "fedcba9876543210", "00000000000000aa"
UTC1 = dt.timezone(dt.timedelta(hours=1))


def _obs(minute: int, quantity: str = "heart_rate", value: float = 80.0) -> Observation:
    unit = {"heart_rate": "/min", "temperature": "Cel"}[quantity]
    return Observation(
        quantity, T0 + dt.timedelta(minutes=minute), value, unit,
        source_value=value, source_unit=unit, source_id=f"m{minute}",
        source_utc_offset_min=60,
    )  # fmt: skip


def _check_append(store) -> None:
    records = [PatientRecord(PatientFacts(A), observations=(_obs(0),)),
               PatientRecord(PatientFacts(B))]  # fmt: skip
    sha = hashlib.sha256(b"first").hexdigest()
    store.import_records(records, source_name="first", source_sha256=sha)
    fever = _obs(3, "temperature", 38.5)
    batch = {A: [_obs(2), _obs(1), _obs(2)], B: [fever]}
    summary = store.append_observations(batch, source_name="live")
    assert (summary.n_observations, summary.n_observations_duplicate) == (3, 1)
    # Ids follow the batch's patients, each patient's values in time order.
    rows = store.con.execute(
        "SELECT measurement_id, source_id, import_id FROM measurement "
        "ORDER BY measurement_id"
    ).fetchall()
    assert [(r[1], r[2]) for r in rows] == [
        ("m0", 1), ("m1", 2), ("m2", 2), ("m3", 2),
    ]  # fmt: skip
    assert store.load_record(B).observations == (fever,)
    log = store.con.execute(
        "SELECT source_name, counts FROM import_log WHERE import_id = ?",
        [summary.import_id],
    ).fetchall()
    counts = json.loads(log[0][1])
    assert log[0][0] == "live" and counts["n_observations"] == 3
    assert set(counts) == set(ImportSummary(1, "x", "y").counts())


def _check_append_refusals(store) -> None:
    before = store.table_counts()
    with pytest.raises(StoreError, match=f"patient.*{ABSENT}.*not in the store"):
        store.append_observations({A: [_obs(10)], ABSENT: [_obs(11)]}, source_name="x")

    def fail() -> None:
        raise StoreError("injected")

    with pytest.raises(StoreError, match="injected"):
        store.append_observations({A: [_obs(12)]}, source_name="x", before_commit=fail)
    assert store.table_counts() == before  # nothing written by either
    summary = store.append_observations({A: [_obs(0), _obs(13)]}, source_name="x")
    assert (summary.n_observations, summary.n_observations_duplicate) == (1, 1)
    assert summary.stored_before == ((A, "heart_rate", T0, "m0"),)
    unchecked = store.append_observations(
        {A: [_obs(14)]}, source_name="x", check_stored=False
    )
    assert unchecked.n_observations == 1
    skipped = store.append_observations({A: [_obs(14)]}, source_name="x")
    assert (skipped.import_id, skipped.n_observations) == (None, 0)


def test_append_observations_duckdb(tmp_path):
    with open_store(str(tmp_path / "twin.duckdb")) as store:
        assert store.sole_writer
        _check_append(store)
        _check_append_refusals(store)


def test_append_observations_postgresql(postgres):
    with open_store(postgres.new_schema()) as store:
        assert not store.sole_writer
        _check_append(store)
        _check_append_refusals(store)


def test_live_writer_on_postgresql_skips_values_another_process_stored(
    postgres, tmp_path
):
    url = postgres.new_schema()
    app = create_app(_settings(url, tmp_path))
    token = app.state.service.tokens.create("write")[0]
    a = pseudonym("P-A")
    with TestClient(app) as client:
        _import(client, token, "P-A")
        path = VITALS_ROUTE.format(pseudonym=a)
        first = client.post(
            path, json=vital("temperature", 38.4, 30), headers=auth(token)
        )
        assert (first.json()["stored"], first.json()["crs_grade"]) == (1, 1)
        # Another process stores a value the service's cache does not know.
        with open_store(url) as other:
            other.append_observations(
                {a: [Observation("systolic_bp", T0 + dt.timedelta(hours=31), 85.0,
                                 "mm[Hg]")]},
                source_name="other process",
            )  # fmt: skip
        body = {"quantity": "systolic_bp", "value": 85, "time": at(31)}
        second = client.post(path, json=body, headers=auth(token)).json()
        assert (second["stored"], second["duplicates"], second["crs_grade"]) == (
            0,
            1,
            2,
        )
        again = client.post(path, json=body, headers=auth(token))
        assert again.json()["duplicates"] == 1
    with open_store(url) as check:
        bp = [
            o for o in check.load_record(a).observations if o.quantity == "systolic_bp"
        ]
    assert len(bp) == 1  # stored once although two writers sent it
    app.state.service.close()
