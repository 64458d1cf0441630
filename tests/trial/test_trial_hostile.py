"""Trial files and runs a hostile or careless user could give (review findings)."""

from __future__ import annotations

import pytest
import trial_fakes

from cartwin.errors import TrialConfigError
from cartwin.trial.config import load_trial, parse_trial
from cartwin.trial.runner import TrialRunError, run_trial


def _parse(**changes):
    data = trial_fakes.trial_data(patients=6)
    for path, value in changes.items():
        table, key = path.split(".")
        target = data["trial"] if table == "trial" else data["arm"][0]
        target[key] = value
    return parse_trial(data, source="hostile.toml")


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("trial.horizon_days", 1e9, "horizon_days"),  # a typo once took 23 GiB
        ("trial.patients_per_arm", 10**9, "patients_per_arm"),
        ("arm.dose_cells_per_kg", 1e100, "dose_cells_per_kg"),
    ],
)
def test_sizes_beyond_any_real_trial_are_refused(path, value, field):
    with pytest.raises(TrialConfigError, match=field):
        _parse(**{path: value})


def test_override_beyond_the_limit_is_refused():
    with pytest.raises(TrialConfigError, match="patients_per_arm"):
        trial_fakes.make_trial().with_overrides(patients_per_arm=10**9)


def test_deeply_nested_file_is_a_clear_error(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(TrialConfigError, match="deep.toml: nested too deeply"):
        load_trial(path)


def test_engine_refusals_come_before_anything_is_written(tmp_path):
    data = trial_fakes.trial_data(patients=6)
    data["population"] = {"calibrate_to": "NOPE-9"}
    trial = parse_trial(data, source="hostile.toml")
    with pytest.raises(TrialConfigError, match="'NOPE-9' is not a published cohort"):
        run_trial(trial, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:99999", "tcp://127.0.0.1:0"])
def test_scheduler_port_out_of_range_fails_at_once(address, tmp_path):
    with pytest.raises(TrialRunError, match="port 1-65535"):
        run_trial(trial_fakes.make_trial(), tmp_path / "out", scheduler=address,
                  simulate=trial_fakes.fake_simulate, progress=False)
    assert not (tmp_path / "out").exists()


def test_arm_names_differing_in_case_only_are_refused(tmp_path):
    data = trial_fakes.trial_data(patients=6)
    data["arm"][2]["name"] = "AXI-CEL"
    trial = parse_trial(data, source="hostile.toml")
    with pytest.raises(TrialRunError, match="same chunk file name"):
        run_trial(trial, tmp_path / "out", simulate=trial_fakes.fake_simulate,
                  progress=False)


def test_chunk_copied_from_another_arm_is_recomputed(tmp_path):
    trial = trial_fakes.make_trial(patients=8)
    kwargs = {"chunk_size": 4, "simulate": trial_fakes.fake_simulate,
              "progress": False, "write_report": False}
    first = run_trial(trial, tmp_path, **kwargs)
    chunks = tmp_path / "chunks"
    (chunks / "axi-cel-00001.parquet").write_bytes(
        (chunks / "low_dose-00001.parquet").read_bytes())
    again = run_trial(trial, tmp_path, **kwargs)
    assert again.provenance["chunks_run"] == 1
    assert again.outcomes.equals(first.outcomes)
