"""Live stream on a real uvicorn server on 127.0.0.1: alerts, bursts, WebSocket.

Every test sends a bounded number of requests to a server on a free loopback
port and waits at most a few seconds for any event.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
from service_samples import KEY, auth, bundle, pseudonym, vital
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from cartwin.service import ServiceSettings, create_app
from cartwin.service.loopback import LoopbackServer

SOURCE_IDS = ("P-A", "P-B")
FHIR_JSON = "application/fhir+json"


class SseReader(threading.Thread):
    """Reads an SSE stream in the background; collects ``crs-alert`` events."""

    def __init__(self, url: str, token: str, last_event_id: int | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = url, auth(token)
        if last_event_id is not None:
            self.headers["Last-Event-ID"] = str(last_event_id)
        self.events: list[dict] = []
        self.ready = threading.Event()
        self.closing = False

    def run(self) -> None:
        timeout = httpx.Timeout(5.0, read=None)
        with httpx.Client(timeout=timeout) as client:
            with client.stream("GET", self.url, headers=self.headers) as response:
                self.status = response.status_code
                self.ready.set() if response.status_code != 200 else None
                self._read(response)

    def _read(self, response) -> None:
        kind = None
        for line in response.iter_lines():
            if line.startswith(": subscribed"):
                self.ready.set()
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "crs-alert":
                self.events.append(json.loads(line[6:]))
            if self.closing:
                return

    def wait_for(self, count: int, seconds: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + seconds
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.events

    def close(self) -> None:
        self.closing = True
        self.join(timeout=5)


@pytest.fixture
def live(tmp_path):
    """A served app with patients P-A and P-B imported; its tokens."""
    settings = ServiceSettings(
        store=str(tmp_path / "twin.duckdb"), pseudonym_key=KEY,
        rate_limit_per_second=10_000, rate_limit_burst=10_000,
        sse_keepalive_seconds=0.1,
    )  # fmt: skip
    app = create_app(settings)
    registry = app.state.service.tokens
    tokens = {s: registry.create(s)[0] for s in ("read", "write")}
    tokens["read_a"] = registry.create("read", patients=[pseudonym("P-A")])[0]
    with LoopbackServer(app) as server:
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            for source_id in SOURCE_IDS:
                response = client.post(
                    "/v1/imports/fhir", content=bundle(source_id),
                    headers={**auth(tokens["write"]), "Content-Type": FHIR_JSON},
                )  # fmt: skip
                assert response.status_code == 201
            yield server, client, tokens, app
    app.state.service.close()


def _stream(server, path: str, token: str, **kwargs) -> SseReader:
    reader = SseReader(server.url + path, token, **kwargs)
    reader.start()
    assert reader.ready.wait(5.0)
    return reader


def test_grade_rise_alert_delivered_once(live):
    server, client, tokens, _ = live
    a = pseudonym("P-A")
    reader = _stream(server, f"/v1/patients/{a}/alerts/stream", tokens["read"])
    url, headers = f"/v1/patients/{a}/vitals", auth(tokens["write"])
    # Fever 38.6 °C (ASTCT grade 1), then SBP 85 mmHg within 24 h (grade 2,
    # hypotension not needing vasopressors), then more of the same.
    steps = [vital("temperature", 38.6, 24), vital("systolic_bp", 85, 25),
             vital("systolic_bp", 84, 26), vital("systolic_bp", 85, 25)]  # fmt: skip
    grades = [
        client.post(url, json=body, headers=headers).json()["crs_grade"]
        for body in steps
    ]
    assert grades == [1, 2, 2, 2]
    events = reader.wait_for(2)
    time.sleep(0.3)  # room for a wrongly repeated alert to arrive
    reader.close()
    assert [(e["grade_from"], e["grade_to"]) for e in reader.events] == [(0, 1), (1, 2)]
    assert events[1]["driver"] == "hypotension" and events[1]["pseudonym"] == a
    assert any("systolic BP 85" in text for text in events[1]["reasons"])


def test_global_stream_respects_access_list_and_replays(live):
    server, client, tokens, _ = live
    everyone = _stream(server, "/v1/alerts/stream", tokens["read"])
    only_a = _stream(server, "/v1/alerts/stream", tokens["read_a"])
    for source_id in SOURCE_IDS:
        url = f"/v1/patients/{pseudonym(source_id)}/vitals"
        client.post(
            url, json=vital("temperature", 39.0, 30), headers=auth(tokens["write"])
        )
    assert len(everyone.wait_for(2)) == 2
    time.sleep(0.2)
    everyone.close(), only_a.close()
    assert [e["pseudonym"] for e in only_a.events] == [pseudonym("P-A")]
    # A client that reconnects with Last-Event-ID gets what came after it.
    first_id = everyone.events[0]["alert_id"]
    replay = _stream(
        server, "/v1/alerts/stream", tokens["read"], last_event_id=first_id
    )
    assert [e["alert_id"] for e in replay.wait_for(1)] == [
        everyone.events[1]["alert_id"]
    ]
    replay.close()


def test_burst_nothing_lost(live):
    server, _, tokens, app = live
    patients = [pseudonym(s) for s in SOURCE_IDS]
    n_per_patient = 150

    async def post_all() -> list[dict]:
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(
            base_url=server.url, limits=limits, timeout=20
        ) as c:

            async def one(p: str, i: int) -> dict:
                body = vital("heart_rate", 60 + i % 50, i / 60, source_id=f"hr-{i}")
                r = await c.post(
                    f"/v1/patients/{p}/vitals", json=body, headers=auth(tokens["write"])
                )
                return r.json()

            jobs = [one(p, i) for i in range(n_per_patient) for p in patients]
            return await asyncio.gather(*jobs)

    started = time.perf_counter()
    results = asyncio.run(post_all())
    elapsed = time.perf_counter() - started
    assert sum(r["stored"] for r in results) == len(results) == 2 * n_per_patient
    with app.state.service.gate.use() as store:
        counts = {p.pseudonym: p.n_observations for p in store.persons()}
    assert all(counts[p] == n_per_patient for p in patients)
    assert app.state.service.ingestor.commits < len(results)  # commits were grouped
    assert elapsed < 30


def test_websocket_stream_acknowledges_each_message(live):
    server, _, tokens, app = live
    a, b = pseudonym("P-A"), pseudonym("P-B")
    url = server.url.replace("http", "ws") + "/v1/vitals/ws"
    messages = [
        {**vital("temperature", 38.2, 40), "patient": a},
        [
            {**vital("spo2", 96, 40), "patient": a},
            {**vital("spo2", 95, 40), "patient": b},
        ],
        {**vital("temperature", 38.2, 40), "patient": a},
        {"patient": a, "quantity": "temperature", "value": 38},
    ]
    with connect(url, additional_headers=auth(tokens["write"]), open_timeout=5) as ws:
        for message in messages:
            ws.send(json.dumps(message))
        replies = {
            r["seq"]: r for r in (json.loads(ws.recv(timeout=5)) for _ in messages)
        }
    assert [x["stored"] for x in replies[1]["results"]] == [1]
    assert replies[1]["results"][0]["crs_grade"] == 1
    assert sorted(x["stored"] for x in replies[2]["results"]) == [1, 1]
    assert replies[3]["results"][0]["duplicates"] == 1
    assert replies[4]["error"]["field"] == "message.time"
    rows = [r for r in app.state.service.audit.entries() if r.method == "WS"]
    assert [r.status for r in rows].count(200) == 3 and rows[0].status == 101


def test_websocket_refuses_read_token_and_restricted_patients(live):
    server, _, tokens, _ = live
    url = server.url.replace("http", "ws") + "/v1/vitals/ws"
    with pytest.raises(InvalidStatus):
        connect(url, additional_headers=auth(tokens["read"]), open_timeout=5)
    with pytest.raises(InvalidStatus):
        connect(url, open_timeout=5)
