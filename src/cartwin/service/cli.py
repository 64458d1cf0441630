"""Command line of the service: ``serve`` and ``token create|list|revoke``.

The project's main CLI mounts these with :func:`mount`, giving
``cartwin serve [--store URL] [--host 127.0.0.1] [--port N]`` and
``cartwin token create --scope read|write|admin [--patient ID]``. A token is
printed once, on standard output, and cannot be shown again (only its hash
is stored). ``--patient`` takes a pseudonym (16 hex digits) or a source id,
which is hashed with the pseudonymisation key; the source id is never stored
or printed.

The token commands work while the service runs: tokens live in the service's
SQLite file (see :mod:`cartwin.service.db`), which several processes can use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys

import typer

from cartwin.errors import CartwinError

service_app = typer.Typer(
    help="Live twin service: serve the API, manage its tokens.", no_args_is_help=True
)
token_app = typer.Typer(
    help="API tokens: create (shown once), list, revoke.", no_args_is_help=True
)
service_app.add_typer(token_app, name="token")

_LOOPBACK = ("127.0.0.1", "::1", "localhost")

StoreOption = typer.Option(
    None, "--store", envvar="CARTWIN_STORE",
    help="Twin store: DuckDB file or postgresql:// URL (default ./cartwin.duckdb).",
)  # fmt: skip
SecurityOption = typer.Option(
    None, "--security-db",
    help="SQLite file of tokens, audit log and alerts (default: beside the store).",
)  # fmt: skip


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


def _settings(**values):
    from cartwin.service.settings import ServiceSettings

    return ServiceSettings.from_env(**values)


@service_app.command("serve")
def serve(
    store: str | None = StoreOption,
    host: str | None = typer.Option(
        None, "--host", help="Address (default 127.0.0.1)."
    ),
    port: int | None = typer.Option(None, "--port", help="TCP port (default 8787)."),
    security_db: str | None = SecurityOption,
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning."),
) -> None:
    """Run the live twin service (FastAPI on uvicorn; loopback by default)."""
    import uvicorn

    from cartwin.service.app import create_app

    logging.basicConfig(
        level=os.environ.get("CARTWIN_LOG_LEVEL", log_level.upper()),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        settings = _settings(store=store, host=host, port=port, security_db=security_db)
        app = create_app(settings)
    except CartwinError as exc:
        _fail(exc)
    if settings.host not in _LOOPBACK:
        typer.echo(
            f"warning: listening on {settings.host}, not loopback; put a TLS proxy "
            "in front, tokens travel in clear otherwise",
            err=True,
        )
    # No access log: the audit log records each request without its raw path.
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, access_log=False,
        log_level=log_level, timeout_graceful_shutdown=5,
    )  # fmt: skip
    try:
        uvicorn.Server(config).run()
    finally:
        app.state.service.close()


@contextlib.contextmanager
def _registry(store: str | None, security_db: str | None):
    from cartwin.service.auth import TokenRegistry
    from cartwin.service.db import ServiceDB

    settings = _settings(store=store, security_db=security_db)
    db = ServiceDB(settings.security_db_path())
    try:
        yield TokenRegistry(db)
    finally:
        db.close()


def _pseudonyms(patients: list[str]) -> list[str]:
    from cartwin.record.pseudonym import load_key, looks_like_pseudonym, pseudonymise

    raw = [p for p in patients if not looks_like_pseudonym(p)]
    key = load_key() if raw else b""
    return [p if looks_like_pseudonym(p) else pseudonymise(p, key) for p in patients]


@token_app.command("create")
def token_create(
    scope: str = typer.Option(..., "--scope", help="read, write or admin."),
    patient: list[str] | None = typer.Option(
        None,
        "--patient",
        help="Limit to this patient (pseudonym or source id); repeatable.",
    ),
    label: str = typer.Option(
        "", "--label", help="Note for `token list` (no patient ids)."
    ),
    store: str | None = StoreOption,
    security_db: str | None = SecurityOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON (token included)."),
) -> None:
    """Create a token and print it once (only its hash is kept)."""
    try:
        with _registry(store, security_db) as registry:
            pseudonyms = _pseudonyms(patient or [])
            token, info = registry.create(scope, patients=pseudonyms, label=label)
    except CartwinError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps({"token": token, **info.__dict__}))
        return
    limited = ", ".join(info.patients) if info.patients else "all patients"
    typer.echo(
        f"token {info.token_id} (scope {info.scope}; {limited}); shown once:", err=True
    )
    typer.echo(token)


@token_app.command("list")
def token_list(
    store: str | None = StoreOption,
    security_db: str | None = SecurityOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List tokens: id, scope, patients, created, revoked (never the token)."""
    try:
        with _registry(store, security_db) as registry:
            infos = registry.list()
    except CartwinError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps([info.__dict__ for info in infos]))
        return
    for info in infos:
        state = f"revoked {info.revoked_at}" if info.revoked_at else "active"
        patients = ",".join(info.patients) or "all"
        typer.echo(
            f"{info.token_id}  {info.scope:<5}  patients={patients}  "
            f"created {info.created_at}  {state}  {info.label}".rstrip()
        )


@token_app.command("revoke")
def token_revoke(
    token_id: str = typer.Argument(..., help="Token id (from `token list`)."),
    store: str | None = StoreOption,
    security_db: str | None = SecurityOption,
) -> None:
    """Revoke a token; requests with it are refused at once."""
    try:
        with _registry(store, security_db) as registry:
            info = registry.revoke(token_id)
    except CartwinError as exc:
        _fail(exc)
    typer.echo(f"token {info.token_id} revoked at {info.revoked_at}")


def mount(app: typer.Typer) -> None:
    """Add ``serve`` and ``token`` to the project's main Typer app."""
    app.command("serve")(serve)
    app.add_typer(token_app, name="token")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(service_app())
