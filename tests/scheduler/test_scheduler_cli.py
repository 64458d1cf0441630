"""``cartwin queue`` and ``cartwin worker`` (the scheduler's Typer sub-app)."""

from __future__ import annotations

import json

import typer
from scheduler_samples import T_ARRIVAL, import_clone
from typer.testing import CliRunner

from cartwin.scheduler import enqueue_for_observations
from cartwin.scheduler.cli import queue_app
from cartwin.store import open_store

runner = CliRunner()


def _queue_json(store_url):
    result = runner.invoke(queue_app, ["queue", "--store", store_url, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_commands_mount_at_top_level():
    app = typer.Typer()
    app.command("patients")(lambda: None)
    app.add_typer(queue_app)
    result = runner.invoke(app, ["--help"])
    assert "queue" in result.output and "worker" in result.output


def test_queue_view_and_worker_drain(store_url):
    with open_store(store_url) as store:
        patient = import_clone(store, 1)
        enqueue_for_observations(store, patient, ["spo2", "cart_qpcr"], T_ARRIVAL)
    view = _queue_json(store_url)  # also a postgresql:// URL, not a path
    assert view["totals"] == {"pending": 2, "running": 0, "failed": 0, "done": 0}
    assert [job["model"] for job in view["open_jobs"]] == ["crs_grading", "kinetics"]
    assert view["open_jobs"][0]["due_at"] == "2025-03-12T08:00:05+00:00"

    result = runner.invoke(
        queue_app,
        ["worker", "--store", store_url, "--workers", "2", "--drain",
         "--poll-seconds", "0.05"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    view = _queue_json(store_url)
    assert view["totals"]["done"] == 2
    assert sorted(job["outcome"] for job in view["recent_jobs"]) == [
        "new_version", "unchanged",
    ]  # fmt: skip
    table = runner.invoke(queue_app, ["queue", "--store", store_url])
    assert "2 done" in table.stdout and "crs_grading" in table.stdout


def test_queue_of_missing_store_fails_cleanly(tmp_path):
    result = runner.invoke(
        queue_app, ["queue", "--store", str(tmp_path / "none.duckdb")]
    )
    assert result.exit_code == 1
    assert "does not exist" in result.output


def test_worker_refuses_bad_options(tmp_path):
    result = runner.invoke(
        queue_app, ["worker", "--store", str(tmp_path / "s.duckdb"), "--workers", "0"]
    )
    assert result.exit_code != 0
