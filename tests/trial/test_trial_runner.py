"""The trial runner: chunk plan and seeds, resumability, Dask against local.

The engine is replaced by ``trial_fakes.fake_simulate`` (same signature and
columns as ``cartwin.trial.simulate.simulate_chunk``, numpy only), except in
the last test, which runs the real engine once it exists.
"""

from __future__ import annotations

import json
import socket
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import trial_fakes
from pandas.testing import assert_frame_equal
from trial_fakes import CountingSimulate, fake_simulate, make_trial

from cartwin.trial import runner
from cartwin.trial.runner import TrialRunError, chunk_seed, plan_chunks, run_trial


def _run(trial, outdir, chunk_size=8, **kwargs):
    kwargs.setdefault("simulate", fake_simulate)
    kwargs.setdefault("write_report", False)
    return run_trial(trial, outdir, chunk_size=chunk_size, progress=False, **kwargs)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """30 patients per arm in chunks of 8: 4 chunks per simulated arm."""
    outdir = tmp_path_factory.mktemp("first")
    return _run(make_trial(), outdir)


# -- plan and seeds -------------------------------------------------------------
def test_plan_covers_every_patient_of_simulated_arms_once():
    plan = plan_chunks(make_trial(patients=30), 8)
    assert [(s.arm, s.chunk, s.first_patient, s.size) for s in plan[:4]] == [
        ("axi-cel", 0, 0, 8),
        ("axi-cel", 1, 8, 8),
        ("axi-cel", 2, 16, 8),
        ("axi-cel", 3, 24, 6),
    ]
    # the observed arm (index 1) gets no chunk; "low dose" keeps arm index 2
    assert {(s.arm, s.arm_index) for s in plan} == {("axi-cel", 0), ("low dose", 2)}
    assert plan[-1].filename == "low_dose-00003.parquet"
    assert len({s.seed for s in plan}) == len(plan)


def test_chunk_seed_comes_from_the_seed_sequence_of_arm_and_chunk():
    state = np.random.SeedSequence(7, spawn_key=(2, 3)).generate_state(1, np.uint64)
    assert chunk_seed(7, 2, 3) == int(state[0]) >> 1
    assert 0 <= chunk_seed(7, 2, 3) < 2**63
    assert chunk_seed(7, 2, 3) != chunk_seed(7, 3, 2) != chunk_seed(8, 2, 3)


@pytest.mark.parametrize("size", [0, -1, 2.5, True])
def test_chunk_size_must_be_a_positive_whole_number(size):
    with pytest.raises(TrialRunError, match="chunk size"):
        plan_chunks(make_trial(), size)


# -- outputs ----------------------------------------------------------------------
def test_run_writes_chunks_manifest_and_sorted_outcomes(first_run):
    outdir, outcomes = first_run.outdir, first_run.outcomes
    assert len(list((outdir / "chunks").glob("*.parquet"))) == 8
    manifest = json.loads((outdir / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["chunk_size"] == 8
    assert manifest["patients_per_arm"] == 30
    assert manifest["trial_digest"] == first_run.trial.digest()
    assert manifest["runs"][-1]["chunks_run"] == 8
    # simulated arms only, in trial-file order, patients 0..N-1 each
    assert list(outcomes["arm"].unique()) == ["axi-cel", "low dose"]
    for arm in ("axi-cel", "low dose"):
        rows = outcomes[outcomes["arm"] == arm]
        assert rows["patient"].tolist() == list(range(30))
        assert rows["chunk"].tolist() == [p // 8 for p in range(30)]
    assert_frame_equal(pd.read_parquet(outdir / "outcomes.parquet"), outcomes)


def test_each_chunk_holds_the_engine_output_for_its_seed(first_run):
    trial = first_run.trial
    spec = plan_chunks(trial, 8)[5]  # "low dose", chunk 1
    expected = fake_simulate(trial, spec.arm, spec.chunk, spec.size, spec.seed)
    got = first_run.outcomes.query("arm == 'low dose' and chunk == 1")
    assert got["age"].tolist() == expected["age"].tolist()
    assert got["patient"].tolist() == list(range(8, 16))


def test_endpoints_json_is_strict_json_with_provenance(first_run):
    data = json.loads(
        (first_run.outdir / "endpoints.json").read_text(), parse_constant=pytest.fail
    )
    assert set(data) >= {"trial", "endpoints", "validation", "provenance", "paths"}
    prov = data["provenance"]
    assert prov["backend"] == "local" and prov["chunk_size"] == 8
    assert (prov["chunks_total"], prov["chunks_done_before"]) == (8, 0)
    assert prov["trial_digest"] == first_run.trial.digest()
    assert prov["engine"] == "trial_fakes.fake_simulate"
    # the population summary belongs to cartwin's engine, not to a fake one
    assert data["population"] == {}
    assert (
        "no population summary: outcomes from a custom simulate function"
        in (prov["notes"])
    )


# -- resumability -----------------------------------------------------------------
def test_rerun_recomputes_only_the_missing_chunk(first_run, tmp_path):
    outdir = tmp_path / "out"
    _run(first_run.trial, outdir)
    (outdir / "chunks" / "low_dose-00001.parquet").unlink()
    counting = CountingSimulate()
    again = _run(first_run.trial, outdir, simulate=counting)
    assert counting.calls == [("low dose", 1)]
    assert (again.provenance["chunks_done_before"], again.provenance["chunks_run"]) == (
        7,
        1,
    )
    assert_frame_equal(again.outcomes, first_run.outcomes)
    assert len(json.loads((outdir / "manifest.json").read_text())["runs"]) == 2


def test_interrupted_run_keeps_finished_chunks(first_run, tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash") as info:
        _run(first_run.trial, tmp_path, simulate=trial_fakes.failing_simulate)
    assert "chunk 1 of arm 'axi-cel'" in "".join(info.value.__notes__)
    assert [p.name for p in (tmp_path / "chunks").iterdir()] == [
        "axi-cel-00000.parquet"
    ]
    counting = CountingSimulate()
    resumed = _run(first_run.trial, tmp_path, simulate=counting)
    assert len(counting.calls) == 7 and ("axi-cel", 0) not in counting.calls
    assert_frame_equal(resumed.outcomes, first_run.outcomes)


def test_stray_temporary_and_truncated_chunks_are_redone(first_run, tmp_path):
    _run(first_run.trial, tmp_path)
    chunks = tmp_path / "chunks"
    stray = chunks / "axi-cel-00003.parquet.4242.tmp"
    stray.write_bytes(b"PAR1 half a chunk")
    (chunks / "axi-cel-00002.parquet").write_bytes(b"PAR1 cut off")
    counting = CountingSimulate()
    again = _run(first_run.trial, tmp_path, simulate=counting)
    assert counting.calls == [("axi-cel", 2)]
    assert not stray.exists()
    assert_frame_equal(again.outcomes, first_run.outcomes)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"seed": 8}, "seed"),
        ({"patients": 31}, "patients_per_arm"),
        ({"chunk_size": 10}, "chunk_size"),
        ({"alpha": 0.1}, "trial_digest"),
    ],
)
def test_manifest_mismatch_names_the_field_and_force_starts_over(
    first_run, tmp_path, change, field
):
    _run(first_run.trial, tmp_path)
    data = trial_fakes.trial_data(change.get("patients", 30), change.get("seed", 7))
    data["trial"]["alpha"] = change.get("alpha", 0.05)
    trial = trial_fakes.parse_trial(data)
    size = change.get("chunk_size", 8)
    with pytest.raises(TrialRunError, match=f"{field} is .* there but"):
        _run(trial, tmp_path, chunk_size=size)
    fresh = _run(trial, tmp_path, chunk_size=size, force=True)
    assert fresh.provenance["chunks_done_before"] == 0
    files = list((tmp_path / "chunks").glob("*.parquet"))
    assert len(files) == len(plan_chunks(trial, size))


def test_output_folder_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "results"
    target.write_text("not a folder")
    with pytest.raises(TrialRunError, match=f"{target} is a file"):
        _run(make_trial(), target)


def test_chunks_without_manifest_are_not_trusted(tmp_path):
    (tmp_path / "chunks").mkdir()
    (tmp_path / "chunks" / "axi-cel-00000.parquet").write_bytes(b"x")
    with pytest.raises(TrialRunError, match="manifest.json is missing"):
        _run(make_trial(), tmp_path)
    assert _run(make_trial(), tmp_path, force=True).provenance["chunks_run"] == 8


def test_engine_returning_the_wrong_number_of_rows_is_an_error(tmp_path):
    def short(trial, arm, chunk, size, seed):
        return fake_simulate(trial, arm, chunk, size - 1, seed)

    with pytest.raises(
        TrialRunError, match="returned 7 rows for chunk 0 of arm 'axi-cel'"
    ):
        _run(make_trial(), tmp_path, simulate=short)


def test_validation_rows_compare_the_reference_arm_with_the_published_trial(tmp_path):
    pytest.importorskip("cartwin.trial.validation")
    data = trial_fakes.trial_data(patients=20)
    data["trial"]["validate_against"] = "ZUMA-1"
    result = _run(trial_fakes.parse_trial(data), tmp_path)
    rows = {row["endpoint"]: row for row in result.validation}
    assert {row["cohort"] for row in result.validation} == {"ZUMA-1"}
    orr = result.endpoints["arms"]["axi-cel"]["orr"]["estimate"]
    assert rows["orr"]["simulated"] == pytest.approx(orr)


def test_progress_bar_counts_patients_per_arm(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats stderr as a terminal
    run_trial(
        make_trial(),
        tmp_path,
        chunk_size=8,
        simulate=fake_simulate,
        progress=True,
        write_report=False,
    )
    err = capsys.readouterr().err
    assert "axi-cel" in err and "low dose" in err and "30/30" in err


def test_full_run_writes_a_report_or_says_why_not(tmp_path):
    result = _run(make_trial(patients=12), tmp_path, write_report=True)
    notes = " ".join(result.provenance["notes"])
    assert (tmp_path / "report.html").exists() or "write_trial_report skipped" in notes
    assert ("report" in result.paths) == (tmp_path / "report.html").exists()


# -- Dask -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes on loopback; closed at teardown."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    yield cluster
    # Closing stops the worker processes while their comms are still open.
    # Depending on timing, distributed (or tornado under it) may then warn
    # about that normal shutdown, which -W error would turn into a teardown
    # error unrelated to the runner. Only warnings issued from those two
    # packages during this close are muted; none were seen in practice, and
    # any other warning still fails the run.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"(distributed|tornado)(\.|$)")
        cluster.close()


def test_dask_outcomes_equal_local_ones(first_run, cluster, tmp_path):
    result = _run(first_run.trial, tmp_path, scheduler=cluster.scheduler_address)
    assert result.provenance["backend"] == f"dask {cluster.scheduler_address}"
    assert result.provenance["workers"] == 2
    assert_frame_equal(result.outcomes, first_run.outcomes)


def test_dask_cluster_object_and_resume(first_run, cluster, tmp_path):
    _run(first_run.trial, tmp_path, cluster_client=cluster)
    (tmp_path / "chunks" / "axi-cel-00003.parquet").unlink()
    again = _run(first_run.trial, tmp_path, cluster_client=cluster)
    assert (again.provenance["chunks_done_before"], again.provenance["chunks_run"]) == (
        7,
        1,
    )
    assert_frame_equal(again.outcomes, first_run.outcomes)


def test_unreachable_scheduler_fails_fast_naming_the_address(monkeypatch, tmp_path):
    with socket.socket() as sock:  # a loopback port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(runner, "CONNECT_TIMEOUT_S", 1.0)
    address = f"tcp://127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(TrialRunError, match=f"scheduler at {address} within 1 s"):
        _run(make_trial(), tmp_path, scheduler=address)
    assert time.monotonic() - started < 6.0


@pytest.mark.parametrize("address", ["127.0.0.1:8786", "tcp://host", "http://h:1"])
def test_scheduler_address_must_be_tcp_host_port(address, tmp_path):
    with pytest.raises(TrialRunError, match="not of the form tcp://HOST:PORT"):
        _run(make_trial(), tmp_path, scheduler=address)


# -- the real engine ----------------------------------------------------------------
def test_real_engine_chunks_resume_identically(tmp_path):
    pytest.importorskip(
        "cartwin.trial.simulate",
        reason="cartwin.trial.simulate (lead, issue 6) not written yet",
    )
    from cartwin.trial.simulate import simulate_chunk

    # no population calibration: this checks the runner's plumbing, not the model
    data = trial_fakes.trial_data(patients=6)
    trial = trial_fakes.parse_trial({**data, "population": {"calibrate": False}})
    first = _run(trial, tmp_path, chunk_size=4, simulate=simulate_chunk)
    patients = first.outcomes.groupby("arm", sort=False)["patient"].apply(list)
    assert patients.to_dict() == {"axi-cel": list(range(6)), "low dose": list(range(6))}
    (tmp_path / "chunks" / "axi-cel-00001.parquet").unlink()
    again = _run(trial, tmp_path, chunk_size=4, simulate=None)  # the default engine
    assert again.provenance["chunks_run"] == 1
    assert_frame_equal(again.outcomes, first.outcomes)


def test_real_engine_on_dask_equals_local(cluster, tmp_path):
    # the real engine (with the population calibration) on two loopback
    # workers gives the same rows as in this process for the same seed
    from cartwin.trial.simulate import simulate_chunk

    data = trial_fakes.trial_data(patients=6)
    trial = trial_fakes.parse_trial({**data, "population": {"pilot_patients": 400}})
    local = _run(trial, tmp_path / "local", chunk_size=4, simulate=simulate_chunk)
    remote = _run(
        trial, tmp_path / "dask", chunk_size=4, simulate=simulate_chunk,
        scheduler=cluster.scheduler_address,
    )
    assert_frame_equal(remote.outcomes, local.outcomes)
