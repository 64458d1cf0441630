"""Body size limit (413), per-token rate limit (429), CORS closed by default."""

from __future__ import annotations

import pytest
from service_samples import KEY, TestClient, auth, bundle

from cartwin.service import ServiceSettings, create_app
from cartwin.service.limits import RateLimiter


@pytest.fixture
def tight(tmp_path):
    """An app with a 4 KiB body limit and 3 requests at once, 1 per second."""
    settings = ServiceSettings(
        store=str(tmp_path / "twin.duckdb"), pseudonym_key=KEY,
        max_body_bytes=4096, rate_limit_per_second=1.0, rate_limit_burst=3,
    )  # fmt: skip
    app = create_app(settings)
    token = app.state.service.tokens.create("write")[0]
    with TestClient(app) as client:
        yield client, token, app
    app.state.service.close()


def test_oversized_body_is_413_before_import(tight):
    client, token, app = tight
    body = bundle("P-A") + b" " * 5000
    response = client.post(
        "/v1/imports/fhir", content=body,
        headers={**auth(token), "Content-Type": "application/fhir+json"},
    )  # fmt: skip
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "body-too-large" and "4096" in error["message"]
    assert app.state.service.audit.entries()[-1].status == 413
    with app.state.service.gate.use() as store:
        assert store.persons() == []


def test_chunked_oversized_body_is_413(tight):
    client, token, _ = tight

    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    response = client.post(
        "/v1/imports/fhir", content=chunks(),
        headers={**auth(token), "Content-Type": "application/fhir+json"},
    )  # fmt: skip
    assert response.status_code == 413


def test_rate_limit_is_429_with_retry_after(tight):
    client, token, _ = tight
    statuses = [
        client.get("/v1/patients", headers=auth(token)).status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    refused = client.get("/v1/patients", headers=auth(token))
    assert refused.json()["error"]["code"] == "rate-limited"
    assert int(refused.headers["retry-after"]) >= 1


def test_rate_limit_is_per_token(tight):
    client, token, app = tight
    other = app.state.service.tokens.create("read")[0]
    for _ in range(4):
        client.get("/v1/patients", headers=auth(token))
    assert client.get("/v1/patients", headers=auth(other)).status_code == 200


def test_token_bucket_refills_at_rate():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.acquire("t") for _ in range(3)] == [0.0, 0.0, 0.5]
    now[0] = 0.5  # one token back after 0.5 s at 2 per second
    assert limiter.acquire("t") == 0.0
    assert limiter.acquire("t") == pytest.approx(0.5)


def test_cors_preflight_refused_by_default(client):
    response = client.options(
        "/v1/patients",
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "GET",
        },
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
    plain = client.get("/v1/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_cors_opens_only_to_configured_origins(tmp_path):
    settings = ServiceSettings(
        store=str(tmp_path / "twin.duckdb"), pseudonym_key=KEY,
        cors_origins=("https://dashboard.example",),
    )  # fmt: skip
    app = create_app(settings)
    preflight = {"Access-Control-Request-Method": "GET"}
    with TestClient(app) as client:
        allowed = client.options(
            "/v1/patients", headers={"Origin": "https://dashboard.example", **preflight}
        )
        refused = client.options(
            "/v1/patients", headers={"Origin": "https://evil.example", **preflight}
        )
    app.state.service.close()
    assert allowed.headers["access-control-allow-origin"] == "https://dashboard.example"
    assert refused.status_code == 400
