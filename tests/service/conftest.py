"""Fixtures of the service tests: a store, an app, tokens, synthetic FHIR patients.

Traffic goes only to the in-process app (TestClient) or to a uvicorn server
on 127.0.0.1 (:class:`cartwin.service.loopback.LoopbackServer`).
"""

from __future__ import annotations

import pytest
from service_samples import KEY, TestClient, auth, bundle, pseudonym

from cartwin.service import ServiceSettings, create_app


@pytest.fixture
def settings(tmp_path) -> ServiceSettings:
    return ServiceSettings(
        store=str(tmp_path / "twin.duckdb"),
        pseudonym_key=KEY,
        rate_limit_per_second=10_000,
        rate_limit_burst=10_000,
    )


@pytest.fixture
def app(settings):
    application = create_app(settings)
    yield application
    application.state.service.close()


@pytest.fixture
def client(app):
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def tokens(app):
    """Tokens of each scope, and one limited to patient ``P-A``."""
    registry = app.state.service.tokens
    made = {scope: registry.create(scope)[0] for scope in ("read", "write", "admin")}
    made["read_a"] = registry.create("read", patients=[pseudonym("P-A")])[0]
    made["write_a"] = registry.create("write", patients=[pseudonym("P-A")])[0]
    return made


@pytest.fixture
def patients(client, tokens) -> dict[str, str]:
    """Patients P-A and P-B imported through the API; their pseudonyms."""
    for source_id in ("P-A", "P-B"):
        response = client.post(
            "/v1/imports/fhir", content=bundle(source_id),
            headers={**auth(tokens["write"]), "Content-Type": "application/fhir+json"},
        )  # fmt: skip
        assert response.status_code == 201, response.text
    return {"A": pseudonym("P-A"), "B": pseudonym("P-B")}
