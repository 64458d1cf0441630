"""Tokens, scopes, patient access lists and the audit log."""

from __future__ import annotations

import sqlite3

import pytest
from service_samples import auth, pseudonym, vital

from cartwin.service.auth import AuthError, Scope, TokenRegistry, hash_token
from cartwin.service.db import ServiceDB


def test_no_token_is_401_with_bearer_challenge(client, patients):
    response = client.get("/v1/patients")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response.json()["error"]["field"] == "header.Authorization"


@pytest.mark.parametrize(
    "token", ["cwt_00000000_guess", "not-a-token", "cwt_" + "x" * 300]
)
def test_wrong_token_is_401_and_not_echoed(client, patients, token):
    response = client.get("/v1/patients", headers=auth(token))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid-token"
    assert token not in response.text


def test_revoked_token_is_refused_at_once(app, client, patients, tokens):
    registry = app.state.service.tokens
    token, info = registry.create("read")
    assert client.get("/v1/patients", headers=auth(token)).status_code == 200
    registry.revoke(info.token_id)
    assert client.get("/v1/patients", headers=auth(token)).status_code == 401


def test_read_token_cannot_write(client, patients, tokens):
    url = f"/v1/patients/{patients['A']}/vitals"
    response = client.post(
        url, json=vital("temperature", 37.0, 1), headers=auth(tokens["read"])
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient-scope"
    assert "'read'" in response.json()["error"]["message"]


def test_write_token_reads_but_is_not_admin(client, patients, tokens):
    assert client.get("/v1/patients", headers=auth(tokens["write"])).status_code == 200
    assert client.get("/v1/audit", headers=auth(tokens["write"])).status_code == 403
    assert client.get("/v1/audit", headers=auth(tokens["admin"])).status_code == 200


def test_patient_list_shows_only_the_access_list(client, patients, tokens):
    listed = client.get("/v1/patients", headers=auth(tokens["read_a"])).json()
    assert [p["pseudonym"] for p in listed] == [patients["A"]]
    everyone = client.get("/v1/patients", headers=auth(tokens["read"])).json()
    assert {p["pseudonym"] for p in everyone} == {patients["A"], patients["B"]}


def test_other_patient_is_403_and_audited(app, client, patients, tokens):
    response = client.get(
        f"/v1/patients/{patients['B']}/crs", headers=auth(tokens["read_a"])
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "patient-forbidden"
    row = app.state.service.audit.entries()[-1]
    assert (row.method, row.route, row.status) == (
        "GET",
        "/v1/patients/{pseudonym}/crs",
        403,
    )
    assert row.pseudonym == patients["B"]
    assert row.outcome.startswith("denied")
    assert (
        row.token_id == app.state.service.tokens.authenticate(tokens["read_a"]).token_id
    )


def test_restricted_token_cannot_probe_unknown_patients(client, patients, tokens):
    # Not in the access list: 403 whether or not the patient exists.
    missing = "0123456789abcdef"
    response = client.get(f"/v1/patients/{missing}", headers=auth(tokens["read_a"]))
    assert response.status_code == 403
    assert (
        client.get(f"/v1/patients/{missing}", headers=auth(tokens["read"])).status_code
        == 404
    )


def test_restricted_write_token_cannot_import_other_patients(client, patients, tokens):
    from service_samples import bundle

    response = client.post(
        "/v1/imports/fhir", content=bundle("P-C"),
        headers={**auth(tokens["write_a"]), "Content-Type": "application/fhir+json"},
    )  # fmt: skip
    assert response.status_code == 403
    listed = client.get("/v1/patients", headers=auth(tokens["read"])).json()
    assert pseudonym("P-C") not in {p["pseudonym"] for p in listed}


def test_audit_rows_name_who_what_version_outcome(app, client, patients, tokens):
    state = app.state.service
    token_id = state.tokens.authenticate(tokens["read"]).token_id
    client.get(f"/v1/patients/{patients['A']}", headers=auth(tokens["read"]))
    row = state.audit.entries()[-1]
    assert row.token_id == token_id
    assert (row.method, row.route, row.status, row.outcome) == (
        "GET",
        "/v1/patients/{pseudonym}",
        200,
        "ok",
    )
    assert row.pseudonym == patients["A"]
    assert row.at.endswith("+00:00")


def test_audit_never_holds_source_ids_or_tokens(app, client, patients, tokens):
    client.post(
        "/v1/patients/lookup", json={"source_id": "P-B"}, headers=auth(tokens["read"])
    )
    client.get("/v1/patients/P-A-raw-id/crs", headers=auth(tokens["read"]))
    client.get("/v1/patients", headers=auth(tokens["read"] + "x"))
    dump = "\n".join(map(str, app.state.service.db.query("SELECT * FROM audit_log")))
    for secret in ("P-A", "P-B", "raw-id", "Testperson", tokens["read"]):
        assert secret not in dump
    assert "/v1/patients/{pseudonym}/crs" in dump


def test_audit_log_is_append_only_and_chained(app, client, patients, tokens):
    state = app.state.service
    client.get("/v1/patients", headers=auth(tokens["read"]))
    assert state.audit.verify() is None
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        state.db.query("UPDATE audit_log SET status = 200")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        state.db.query("DELETE FROM audit_log")
    # An edit that bypasses the triggers breaks the hash chain at that row.
    with state.db.transaction() as con:
        con.execute("DROP TRIGGER audit_log_no_update")
        con.execute("UPDATE audit_log SET outcome = 'tampered' WHERE seq = 2")
    assert state.audit.verify() == 2


def test_lookup_hashes_source_id_server_side(client, patients, tokens):
    response = client.post(
        "/v1/patients/lookup", json={"source_id": "P-A"}, headers=auth(tokens["read"])
    )
    assert response.json() == {"pseudonym": patients["A"]}
    denied = client.post(
        "/v1/patients/lookup", json={"source_id": "P-B"}, headers=auth(tokens["read_a"])
    )
    assert denied.status_code == 403
    unknown = client.post(
        "/v1/patients/lookup", json={"source_id": "P-Z"}, headers=auth(tokens["read"])
    )
    assert unknown.status_code == 404 and "P-Z" not in unknown.text


def test_registry_stores_only_the_hash(tmp_path):
    db = ServiceDB(str(tmp_path / "s.sqlite3"))
    registry = TokenRegistry(db)
    token, info = registry.create(
        Scope.WRITE, patients=["00000000000000aa"], label="ward 3"
    )
    stored = db.query("SELECT token_sha256 FROM service_token")[0][0]
    assert stored == hash_token(token) and token not in str(
        db.query("SELECT * FROM service_token")
    )
    principal = registry.authenticate(token)
    assert principal.scope is Scope.WRITE and principal.patients == {"00000000000000aa"}
    assert principal.token_id == info.token_id and len(token) > 40
    db.close()


def test_registry_refuses_bad_requests(tmp_path):
    registry = TokenRegistry(ServiceDB(str(tmp_path / "s.sqlite3")))
    with pytest.raises(
        AuthError, match="scope 'root' is not one of read, write, admin"
    ):
        registry.create("root")
    with pytest.raises(AuthError, match="pseudonyms"):
        registry.create("read", patients=["MRN-123"])
    with pytest.raises(AuthError, match="admin token sees every patient"):
        registry.create("admin", patients=["00000000000000aa"])
    with pytest.raises(AuthError, match="does not exist"):
        registry.revoke("ffffffff")
    registry.db.close()


def test_scope_order():
    assert Scope.ADMIN.allows(Scope.WRITE) and Scope.WRITE.allows(Scope.READ)
    assert not Scope.READ.allows(Scope.WRITE) and not Scope.WRITE.allows(Scope.ADMIN)
