"""``cartwin trial run`` / ``example``: JSON and text output, errors, exit codes.

The engine is ``trial_fakes.fake_simulate`` (passed to the runner by a
patched ``run_trial``), so these tests check the command line, not the model.
"""

from __future__ import annotations

import functools
import json
import socket

import pytest
import yaml
from trial_fakes import fake_simulate, trial_data
from typer.testing import CliRunner

from cartwin.trial import cli, runner
from cartwin.trial.cli import trial_app


@pytest.fixture(autouse=True)
def fake_engine(monkeypatch):
    """The fake engine, and a one-line report (the real one is tested elsewhere)."""
    run_trial = runner.run_trial
    monkeypatch.setattr(
        runner, "run_trial", functools.partial(run_trial, simulate=fake_simulate)
    )

    def report(result, path):
        path.write_text(f"<p>{result.trial.name}</p>", encoding="utf-8")
        return path

    monkeypatch.setattr("cartwin.trial.report.write_trial_report", report)


@pytest.fixture
def trial_file(tmp_path):
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(trial_data(patients=40, seed=11)), encoding="utf-8")
    return path


def _invoke(*args):
    return CliRunner().invoke(trial_app, [str(a) for a in args], catch_exceptions=False)


def _run_args(trial_file, outdir, *extra):
    return (
        "run",
        trial_file,
        "-o",
        outdir,
        "--patients",
        10,
        "--chunk-size",
        4,
        *extra,
    )


def test_run_json_has_endpoints_validation_provenance_paths(trial_file, tmp_path):
    result = _invoke(*_run_args(trial_file, tmp_path / "out", "--seed", 3, "--json"))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= {"trial", "endpoints", "validation", "provenance", "paths"}
    prov = data["provenance"]
    assert (prov["seed"], prov["patients_per_arm"], prov["chunk_size"]) == (3, 10, 4)
    assert prov["chunks_total"] == 6 and prov["backend"] == "local"
    assert data["trial"]["trial"]["seed"] == 3  # the override is the trial run
    assert (tmp_path / "out" / "outcomes.parquet").samefile(data["paths"]["outcomes"])


def test_run_text_prints_summary_and_paths(trial_file, tmp_path):
    result = _invoke(*_run_args(trial_file, tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "10 virtual patients per simulated arm, seed 11" in result.stdout
    assert "6 chunks run and 0 reused (local)" in result.stdout
    assert f"outcomes: {tmp_path / 'out' / 'outcomes.parquet'}" in result.stdout
    assert f"report: {tmp_path / 'out' / 'report.html'}" in result.stdout
    assert "runner test: endpoints (95% intervals)" in result.stdout
    assert "arm comparisons" in result.stdout
    again = _invoke(*_run_args(trial_file, tmp_path / "out"))
    assert "0 chunks run and 6 reused" in again.stdout


def test_bad_trial_file_exits_2_naming_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[trial]\nname = "x"\ndisease = "AML"\n', encoding="utf-8")
    result = _invoke("run", bad, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 2
    error = json.loads(result.stdout)
    assert error["type"] == "TrialConfigError" and str(bad) in error["error"]
    assert str(bad) in result.stderr
    assert not (tmp_path / "out").exists()


def test_manifest_mismatch_exits_2_and_force_reruns(trial_file, tmp_path):
    assert _invoke(*_run_args(trial_file, tmp_path)).exit_code == 0
    clash = _invoke(*_run_args(trial_file, tmp_path, "--seed", 12, "--json"))
    assert clash.exit_code == 2
    error = json.loads(clash.stdout)
    assert (
        error["type"] == "TrialRunError"
        and "seed is 11 there but 12 now" in error["error"]
    )
    forced = _invoke(
        *_run_args(trial_file, tmp_path, "--seed", 12, "--force", "--json")
    )
    assert forced.exit_code == 0
    assert json.loads(forced.stdout)["provenance"]["chunks_run"] == 6


def test_unreachable_scheduler_exits_2_naming_it(trial_file, tmp_path, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setattr(runner, "CONNECT_TIMEOUT_S", 1.0)
    result = _invoke(*_run_args(trial_file, tmp_path, "--scheduler", address))
    assert result.exit_code == 2
    assert f"cannot reach the Dask scheduler at {address}" in result.stderr


def test_patients_below_one_is_a_usage_error(trial_file, tmp_path):
    result = _invoke("run", trial_file, "-o", tmp_path, "--patients", 0)
    assert result.exit_code == 2 and "--patients" in result.output


def test_default_chunk_size_matches_the_runner():
    assert cli.DEFAULT_CHUNK_SIZE == runner.DEFAULT_CHUNK_SIZE


def test_example_prints_and_writes_a_loadable_trial(tmp_path):
    from cartwin.trial.config import example_trial_path, load_trial

    if not example_trial_path().exists():
        pytest.skip("the example trial file (helper A, issue 6) is not shipped yet")
    printed = _invoke("example")
    assert printed.exit_code == 0
    assert printed.stdout == example_trial_path().read_text(encoding="utf-8")
    target = tmp_path / "my_trial.toml"
    assert _invoke("example", "-o", target).exit_code == 0
    assert load_trial(target).name == load_trial(example_trial_path()).name
    refused = _invoke("example", "-o", target)
    assert refused.exit_code == 2 and "use --force" in refused.stderr
    assert _invoke("example", "-o", target, "--force").exit_code == 0
