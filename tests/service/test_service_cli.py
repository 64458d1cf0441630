"""``serve`` and ``token create|list|revoke`` (Typer sub-app of the service)."""

from __future__ import annotations

import json

import typer
from service_samples import KEY, pseudonym
from typer.testing import CliRunner

from cartwin.service.auth import TokenRegistry
from cartwin.service.cli import mount, service_app
from cartwin.service.db import ServiceDB

runner = CliRunner()


#: No key, no store from the caller's environment unless a test gives one.
NO_ENV = {"CARTWIN_PSEUDONYM_KEY": None, "CARTWIN_PSEUDONYM_KEY_FILE": None,
          "CARTWIN_STORE": None}  # fmt: skip


def _invoke(*args: str, env: dict | None = None):
    return runner.invoke(service_app, list(args), env={**NO_ENV, **(env or {})})


def test_token_create_prints_the_token_once(tmp_path):
    store = str(tmp_path / "twin.duckdb")
    env = {"CARTWIN_PSEUDONYM_KEY": KEY.decode()}
    made = _invoke("token", "create", "--scope", "read", "--patient", "P-A",
                   "--store", store, "--json", env=env)  # fmt: skip
    assert made.exit_code == 0, made.output
    data = json.loads(made.stdout)
    assert data["scope"] == "read" and data["patients"] == [pseudonym("P-A")]
    db = ServiceDB(store + ".service.sqlite3")
    principal = TokenRegistry(db).authenticate(data["token"])
    db.close()
    assert principal.token_id == data["token_id"]
    listed = _invoke("token", "list", "--store", store)
    assert data["token_id"] in listed.stdout and data["token"] not in listed.stdout
    assert "P-A" not in listed.stdout


def test_token_revoke_and_errors(tmp_path):
    store = str(tmp_path / "twin.duckdb")
    made = _invoke("token", "create", "--scope", "write", "--store", store, "--json")
    token_id = json.loads(made.stdout)["token_id"]
    assert _invoke("token", "revoke", token_id, "--store", store).exit_code == 0
    again = _invoke("token", "revoke", token_id, "--store", store)
    assert again.exit_code == 2 and "revoked already" in again.output
    bad = _invoke("token", "create", "--scope", "owner", "--store", store)
    assert bad.exit_code == 2 and "'owner'" in bad.output


def test_source_id_without_key_is_refused(tmp_path):
    store = str(tmp_path / "twin.duckdb")
    result = _invoke("token", "create", "--scope", "read", "--patient", "P-A",
                     "--store", store)  # fmt: skip
    assert result.exit_code == 2 and "CARTWIN_PSEUDONYM_KEY" in result.output


def test_serve_without_key_fails_cleanly(tmp_path):
    result = _invoke("serve", "--store", str(tmp_path / "twin.duckdb"), "--port", "0")
    assert result.exit_code == 2 and "pseudonymisation key" in result.output


def test_mount_adds_serve_and_token():
    app = typer.Typer()
    mount(app)
    names = {c.name for c in app.registered_commands} | {
        g.name for g in app.registered_groups
    }
    assert names == {"serve", "token"}
