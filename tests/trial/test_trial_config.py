"""Trial files: the shipped example, TOML/YAML equivalence, every error class."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cartwin.errors import DataError, TrialConfigError
from cartwin.trial.config import (
    ENDPOINTS,
    Arm,
    DrugPolicy,
    Eligibility,
    Lymphodepletion,
    example_trial_path,
    load_trial,
    parse_trial,
)

BASE = """\
[trial]
name = "two doses"
disease = "LBCL"
patients_per_arm = 200
seed = 7
horizon_days = 365
reference_arm = "high"

[[arm]]
name = "high"
product = "axi-cel"
dose_cells_per_kg = 2.0e6
tocilizumab = { at_crs_grade = 2 }
steroids = { at_crs_grade = 3, dexamethasone_mg = 20 }

[[arm]]
name = "low"
product = "axi-cel"
dose_cells = 8.0e7
memory_fraction = 0.6
tocilizumab = { at_crs_grade = 2, doses = 1 }

[[arm]]
name = "published"
observed = { n = 101, orr = 0.82, cr = 0.58 }

[[endpoint]]
name = "orr"

[[endpoint]]
name = "pfs"
"""

# The same trial as BASE, written as YAML (2.0e6 without exponent sign is a
# string in YAML 1.1; the trial loader reads it as a number like YAML 1.2).
BASE_YAML = """\
trial:
  name: two doses
  disease: LBCL
  patients_per_arm: 200
  seed: 7
  horizon_days: 365
  reference_arm: high
arm:
  - name: high
    product: axi-cel
    dose_cells_per_kg: 2.0e6
    tocilizumab: {at_crs_grade: 2}
    steroids: {at_crs_grade: 3, dexamethasone_mg: 20}
  - name: low
    product: axi-cel
    dose_cells: 80000000
    memory_fraction: 0.6
    tocilizumab: {at_crs_grade: 2, doses: 1}
  - name: published
    observed: {n: 101, orr: 0.82, cr: 0.58}
endpoint:
  - name: orr
  - name: pfs
"""


def _write(tmp_path, text: str, name: str = "trial.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path, text: str, name: str = "bad.toml") -> str:
    with pytest.raises(TrialConfigError) as info:
        load_trial(_write(tmp_path, text, name))
    message = str(info.value)
    assert name in message, message
    return message


def _edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def test_shipped_example_is_zuma1_like():
    # ZUMA-1 published numbers: clinical-facts §8 (Ther Adv Hematol 2019,
    # doi:10.1177/2040620719841581, Table 4), n = 101, ORR 82 %, CR 58 %,
    # CRS >= 3 13 %, neurotoxicity >= 3 31 %
    trial = load_trial(example_trial_path())
    reference = trial.arm(trial.reference_arm)
    assert (trial.disease, trial.patients_per_arm, trial.validate_against) == (
        "LBCL", 1000, "ZUMA-1")
    assert reference.dose_cells_per_kg == 2.0e6 and reference.bridging is None
    # flu 30 + cy 500 mg/m2 = one ld_exposure unit a day (graph/inputs.py)
    assert reference.lymphodepletion == Lymphodepletion("flu/cy", (-5, -4, -3), 1.0)
    # no modelled policy in the reference arm: the CRS/ICANS links carry
    # ZUMA-1's own practice; the second arm gives tocilizumab from grade 1
    assert not reference.tocilizumab.given and not reference.steroids.given
    early = trial.arm("axi-cel early tocilizumab")
    assert early.tocilizumab == DrugPolicy(1, 1.0)
    observed = [a for a in trial.arms if not a.simulated]
    assert len(observed) == 1 and len(trial.simulated_arms) == 2
    assert {k: observed[0].observed[k] for k in
            ("n", "orr", "cr", "crs_ge3", "icans_ge3")} == {
        "n": 101, "orr": 0.82, "cr": 0.58, "crs_ge3": 0.13, "icans_ge3": 0.31}
    assert trial.endpoints == ENDPOINTS


def test_toml_and_yaml_give_equal_trials_and_digests(tmp_path):
    from_toml = load_trial(_write(tmp_path, BASE))
    from_yaml = load_trial(_write(tmp_path, BASE_YAML, "trial.yaml"))
    assert from_toml == from_yaml
    assert from_toml.digest() == from_yaml.digest()
    assert from_yaml.source.endswith("trial.yaml")
    assert from_toml.arm("low").dose_cells == 8.0e7
    assert from_toml.endpoints == ("orr", "pfs")


def test_digest_changes_with_dose_and_overrides(tmp_path):
    trial = load_trial(_write(tmp_path, BASE))
    other = load_trial(_write(tmp_path, _edit("dose_cells = 8.0e7",
                                              "dose_cells = 8.1e7"), "b.toml"))
    assert len(trial.digest()) == 64
    assert other.digest() != trial.digest()
    bigger = trial.with_overrides(patients_per_arm=5000, seed=3)
    assert (bigger.patients_per_arm, bigger.seed) == (5000, 3)
    assert bigger.digest() != trial.digest()
    assert trial.with_overrides().digest() == trial.digest()
    with pytest.raises(TrialConfigError, match="patients_per_arm = 0"):
        trial.with_overrides(patients_per_arm=0)


def test_to_dict_round_trips(tmp_path):
    trial = load_trial(example_trial_path())
    assert parse_trial(trial.to_dict()) == trial
    toml_trial = load_trial(_write(tmp_path, BASE))
    again = parse_trial(toml_trial.to_dict())
    assert again == toml_trial and again.digest() == toml_trial.digest()


def test_defaults_and_unit_conversions(tmp_path):
    trial = load_trial(_write(tmp_path, BASE))
    high, low = trial.arm("high"), trial.arm("low")
    # 20 mg dexamethasone = 2 steroid_exposure units of 10 mg (inputs.py)
    assert high.steroids == DrugPolicy(3, 2.0)
    assert low.steroids == DrugPolicy(None, 1.0) and not low.steroids.given
    assert high.memory_fraction == 0.3 and low.memory_fraction == 0.6
    assert high.lymphodepletion == Lymphodepletion()
    assert (trial.alpha, trial.power, trial.validate_against) == (0.05, 0.8, None)
    assert not trial.arm("published").simulated


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        # half of each reference dose: 0.5 * 15/30 + 0.5 * 250/500 = 0.5 unit
        ('{ regimen = "flu/cy", fludarabine_mg_m2 = 15, cyclophosphamide_mg_m2 = 250 }',
         Lymphodepletion("flu/cy", (-5, -4, -3), 0.5)),
        # bendamustine 90 mg/m2 = 1 unit (LD_REFERENCE), default days -4, -3
        ('{ regimen = "bendamustine", bendamustine_mg_m2 = 90 }',
         Lymphodepletion("bendamustine", (-4, -3), 1.0)),
        ('{ regimen = "flu/cy", days = [-3, -6], units_per_day = 0.8 }',
         Lymphodepletion("flu/cy", (-6, -3), 0.8)),
        ('{ regimen = "none" }', Lymphodepletion("none", (), 0.0)),
    ],
)
def test_lymphodepletion_regimens(tmp_path, table, expected):
    text = _edit('tocilizumab = { at_crs_grade = 2 }\n',
                 f'tocilizumab = {{ at_crs_grade = 2 }}\nlymphodepletion = {table}\n')
    assert load_trial(_write(tmp_path, text)).arm("high").lymphodepletion == expected


def test_bridging_and_eligibility_are_read(tmp_path):
    text = _edit("memory_fraction = 0.6\n", "memory_fraction = 0.6\n"
                 "bridging = { days = [-14, -10], units_per_day = 2 }\n"
                 "eligibility = { max_hematotox = 2, min_age = 18, max_age = 75 }\n")
    low = load_trial(_write(tmp_path, text)).arm("low")
    assert low.bridging.days == (-14.0, -10.0) and low.bridging.units_per_day == 2.0
    assert low.eligibility == Eligibility(2, 18.0, 75.0, None)


def test_eligibility_mask():
    rules = Eligibility(max_hematotox=2, min_age=18, max_age=75, max_prior_lines=3)
    frame = pd.DataFrame({
        "age": [17.9, 18.0, 75.0, 75.1, 50.0, np.nan, 50.0],
        "hematotox": [0, 2, 1, 0, 3, 0, 0],
        "prior_lines": [1, 2, 3, 1, 1, 1, 4],
    })
    assert rules.mask(frame).tolist() == [False, True, True, False, False, False,
                                          False]
    assert Eligibility().mask(frame).all()
    with pytest.raises(DataError, match="hematotox"):
        rules.mask(frame.drop(columns="hematotox"))


def test_dose_for_per_kg_and_total():
    per_kg = Arm("a", "axi-cel", dose_cells_per_kg=2.0e6)
    total = Arm("b", "axi-cel", dose_cells=1.6e8)
    np.testing.assert_allclose(per_kg.dose_for(np.array([50.0, 80.0])), [1e8, 1.6e8])
    np.testing.assert_allclose(total.dose_for(np.array([50.0, 80.0])), [1.6e8] * 2)
    with pytest.raises(DataError, match="weights > 0"):
        per_kg.dose_for(np.array([70.0, 0.0]))
    with pytest.raises(TrialConfigError, match="observed"):
        Arm("c", observed={"n": 10, "orr": 0.5}).dose_for(np.array([70.0]))


# One case per error class: (edit of BASE, "field path = value" as shown, problem).
ERRORS = {
    "unknown key": (("tocilizumab = { at_crs_grade = 2 }\n",
                     "tocilizumb = { at_crs_grade = 2 }\n"),
                    "arm[0].tocilizumb = {'at_crs_grade': 2}",
                    "did you mean 'tocilizumab'"),
    "wrong type": (("dose_cells_per_kg = 2.0e6", 'dose_cells_per_kg = "2e6"'),
                   "arm[0].dose_cells_per_kg = '2e6'", "must be a number"),
    "nan": (("dose_cells = 8.0e7", "dose_cells = nan"),
            "arm[1].dose_cells = nan", "finite"),
    "inf": (("horizon_days = 365", "horizon_days = inf"),
            "trial.horizon_days = inf", "finite"),
    "negative dose": (("dose_cells_per_kg = 2.0e6", "dose_cells_per_kg = -2.0e6"),
                      "arm[0].dose_cells_per_kg = -2000000.0", "0 <"),
    "memory fraction": (("memory_fraction = 0.6", "memory_fraction = 1.5"),
                        "arm[1].memory_fraction = 1.5", "<= 1"),
    "duplicate arm": (('name = "low"', 'name = "high"'),
                      "arm[1].name = 'high'", "duplicate arm name"),
    "reference not an arm": (('reference_arm = "high"', 'reference_arm = "hi"'),
                             "trial.reference_arm = 'hi'", "is not an arm"),
    "reference observed": (('reference_arm = "high"',
                            'reference_arm = "published"'),
                           "trial.reference_arm = 'published'", "must be simulated"),
    "dose both ways": (("dose_cells = 8.0e7",
                        "dose_cells = 8.0e7\ndose_cells_per_kg = 1.0e6"),
                       ("arm[1].dose_cells_per_kg = {'dose_cells': 80000000.0, "
                        "'dose_cells_per_kg': 1000000.0}"), "exactly one"),
    "dose neither": (("dose_cells = 8.0e7\n", ""),
                     "arm[1].dose_cells_per_kg is missing", "exactly one"),
    "observed rate": (("orr = 0.82", "orr = 1.2"),
                      "arm[2].observed.orr = 1.2", "<= 1"),
    "observed n": (("n = 101", "n = 0"), "arm[2].observed.n = 0", "1 <="),
    "observed arm with a dose": (('name = "published"\n',
                                  'name = "published"\ndose_cells = 1e8\n'),
                                 "arm[2].dose_cells = 100000000.0",
                                 "an observed arm takes only name, product"),
    "unknown endpoint": (('name = "pfs"', 'name = "os"'),
                         "endpoint[1].name = 'os'", "'pfs'"),
    "disease": (('disease = "LBCL"', 'disease = "ALL"'),
                "trial.disease = 'ALL'", "'LBCL', 'MM'"),
    "patients per arm": (("patients_per_arm = 200", "patients_per_arm = 0"),
                         "trial.patients_per_arm = 0", "1 <="),
    "horizon": (("horizon_days = 365", "horizon_days = 60"),
                "trial.horizon_days = 60", "90 <="),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_trial_file_names_file_field_and_value(tmp_path, case):
    (old, new), shown, problem = ERRORS[case]
    message = _error(tmp_path, _edit(old, new))
    assert shown in message, message
    assert problem in message, message


def test_crs_grade_trigger_message(tmp_path):
    # the field path of the brief's example, for the second arm
    text = _edit("tocilizumab = { at_crs_grade = 2, doses = 1 }",
                 "tocilizumab = { at_crs_grade = 5, doses = 1 }")
    message = _error(tmp_path, text)
    assert "arm[1].tocilizumab.at_crs_grade = 5" in message
    assert "ASTCT CRS grade 0..4 (0 = never)" in message
    zero = _edit("tocilizumab = { at_crs_grade = 2, doses = 1 }",
                 "tocilizumab = { at_crs_grade = 0, doses = 1 }")
    never = load_trial(_write(tmp_path, zero)).arm("low").tocilizumab
    assert never.at_crs_grade is None and not never.given


def test_ld_dose_of_another_regimen_is_refused(tmp_path):
    text = _edit("tocilizumab = { at_crs_grade = 2 }\n", "lymphodepletion = "
                 '{ regimen = "flu/cy", bendamustine_mg_m2 = 90 }\n')
    message = _error(tmp_path, text)
    assert "arm[0].lymphodepletion.bendamustine_mg_m2 = 90" in message
    assert "regimen 'flu/cy'" in message


@pytest.mark.parametrize("name", ["empty.toml", "empty.yaml"])
def test_empty_file(tmp_path, name):
    assert "empty" in _error(tmp_path, "\n# nothing here\n", name)


def test_unparsable_toml_gives_line_and_column(tmp_path):
    message = _error(tmp_path, BASE.replace("seed = 7", "seed = = 7"))
    assert "not valid TOML" in message and "line 5, column" in message


def test_unparsable_yaml_gives_line_and_column(tmp_path):
    text = BASE_YAML.replace("seed: 7", "seed: [7")
    message = _error(tmp_path, text, "bad.yaml")
    assert "not valid YAML" in message and "line " in message


def test_yaml_duplicate_key_is_refused(tmp_path):
    text = BASE_YAML.replace("  seed: 7\n", "  seed: 7\n  seed: 8\n")
    message = _error(tmp_path, text, "dup.yaml")
    assert "duplicate key 'seed'" in message and "line 6" in message


def test_unknown_file_type_and_missing_file(tmp_path):
    assert ".json" in _error(tmp_path, "{}", "trial.json")
    with pytest.raises(TrialConfigError, match="cannot be read"):
        load_trial(tmp_path / "absent.toml")
