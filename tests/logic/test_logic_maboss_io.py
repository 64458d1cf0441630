"""Reading MaBoSS .bnd/.cfg files: real models, syntax and name errors."""

from __future__ import annotations

import pytest

from cartwin.errors import DataError, ModelSpecificationError
from cartwin.logic import (
    LogicSyntaxError,
    UnknownNodeError,
    load_maboss,
    parse_maboss,
)
from cartwin.logic._expr import evaluate

BND = """
Node A {
  logic = B AND NOT C;
  rate_up = @logic ? $k : 0;
  rate_down = @logic ? 0 : 1;
}
Node B { logic = B; rate_up = 0; rate_down = 0; }
Node C { logic = A | (B ^ C); }
"""
CFG = "$k = 2 * 1.5;\nmax_time = 5;\nA.istate = 0;\n[B, C].istate = 0.25 [1, 0], 0.75 [0, 1];\n"


def test_real_models_load_with_their_node_counts(maboss_dir):
    # Node counts from the shared PROVENANCE.md: cellfate 31, dendritic 4,
    # tcell_corral 95 (Corral-Jara et al.).
    counts = {}
    for name in ("cellfate", "dendritic_cells", "tcell_corral"):
        model = load_maboss(maboss_dir / f"{name}.bnd", maboss_dir / f"{name}.cfg")
        counts[name] = len(model.nodes)
    assert counts == {"cellfate": 31, "dendritic_cells": 4, "tcell_corral": 95}


def test_cellfate_settings_variables_and_internal_nodes(maboss_dir):
    model = load_maboss(maboss_dir / "cellfate.bnd", maboss_dir / "cellfate.cfg")
    assert model.settings["max_time"] == 1.0
    assert model.settings["seed_pseudorandom"] == 233814379
    assert model.variables["TransRate"] == pytest.approx(1 / 24)
    assert model.outputs == ("TNF", "NonACD", "Apoptosis", "Survival")
    assert model.initial_probability("FADD") == 1.0
    assert model.initial_probability("TNF") == 0.0


def test_expressions_follow_maboss_precedence():
    # AND binds tighter than OR, XOR sits between them, NOT binds tightest.
    model = parse_maboss(BND, CFG)
    a, c = model.node("A").logic, model.node("C").logic
    assert evaluate(a, {"B": True, "C": False}, {}) == 1.0
    assert evaluate(a, {"B": True, "C": True}, {}) == 0.0
    assert evaluate(c, {"A": False, "B": True, "C": True}, {}) == 0.0
    assert evaluate(c, {"A": True, "B": True, "C": True}, {}) == 1.0


def test_cfg_values_and_joint_istate():
    model = parse_maboss(BND, CFG)
    assert model.variables["k"] == 3.0
    joint = next(c for c in model.initial if c.nodes == ("B", "C"))
    assert dict(joint.probabilities) == {(1, 0): 0.25, (0, 1): 0.75}
    assert model.initial_probability("C") == 0.75


def test_unset_istate_means_one_half():
    model = parse_maboss("Node X { logic = X; }", "")
    assert model.initial_probability("X") == 0.5


@pytest.mark.parametrize(
    ("bnd", "line", "column", "fragment"),
    [
        ("Node A {\n  logic = B &;\n}\nNode B {}", 2, 14, "expected an operand"),
        ("Node A {\n  logic = (A;\n}", 2, 13, "expected ')'"),
        ("Nod A { logic = A; }", 1, 1, "expected 'Node'"),
        ("Node A { logic = A; }\nNode A { logic = A; }", 2, 6, "declared twice"),
        ("Node A {\n  logic = A ~ A;\n}", 2, 13, "unexpected character '~'"),
        ("Node A { logic = A; /* open", 1, 21, "unterminated"),
    ],
)
def test_bnd_syntax_errors_give_line_and_column(bnd, line, column, fragment):
    with pytest.raises(LogicSyntaxError) as info:
        parse_maboss(bnd, "", bnd_source="m.bnd")
    assert (info.value.line, info.value.column) == (line, column)
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"m.bnd:{line}:{column}:")


@pytest.mark.parametrize(
    ("cfg", "line", "column", "fragment"),
    [
        ("max_time = = 5;", 1, 12, "expected an operand"),
        ("max_tim = 5;", 1, 1, "unknown run setting 'max_tim'"),
        ("A.colour = 1;", 1, 3, "node attribute must be one of"),
        ("A.istate = 0.3;", 1, 12, "must be 0, 1, -1"),
        ("[A].istate = 0.5 [2];", 1, 19, "expected 0 or 1"),
        ("\n\n  $x = 1\n", 4, 1, "expected ';'"),
    ],
)
def test_cfg_syntax_errors_give_line_and_column(cfg, line, column, fragment):
    with pytest.raises(LogicSyntaxError) as info:
        parse_maboss("Node A { logic = A; }", cfg, cfg_source="m.cfg")
    assert (info.value.line, info.value.column) == (line, column)
    assert fragment in str(info.value)


def test_unknown_node_in_a_rate_names_node_rate_and_position():
    bnd = "Node A {\n  logic = A;\n  rate_down = C ? 0 : 1;\n}"
    with pytest.raises(UnknownNodeError) as info:
        parse_maboss(bnd, "", bnd_source="m.bnd")
    assert (info.value.line, info.value.column) == (3, 15)
    assert "unknown node 'C' in rate_down of node 'A'" in str(info.value)
    assert isinstance(info.value, ModelSpecificationError)


def test_unknown_variable_and_attribute_are_reported():
    with pytest.raises(UnknownNodeError, match=r"variable \$k in rate_up"):
        parse_maboss("Node A {\n logic = A;\n rate_up = $k;\n}", "")
    with pytest.raises(UnknownNodeError, match="node has no attribute 'logic'"):
        parse_maboss("Node A { rate_up = @logic ? 1 : 0; }", "")


def test_unknown_node_in_cfg_is_reported():
    with pytest.raises(UnknownNodeError) as info:
        parse_maboss("Node A { logic = A; }", "A.istate = 1;\nZ.istate = 0;")
    assert (info.value.line, info.value.column) == (2, 1)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_maboss(tmp_path / "none.bnd", tmp_path / "none.cfg")


def test_comments_are_ignored_and_positions_still_right():
    bnd = "// header\n/* block\n comment */ Node A {\n  logic = A & ;\n}"
    with pytest.raises(LogicSyntaxError) as info:
        parse_maboss(bnd, "")
    assert (info.value.line, info.value.column) == (4, 15)


def test_istate_may_use_variables():
    model = parse_maboss(
        "Node A { logic = A; }", "$p = 0.2;\nA.istate = $p [1], 1 - $p [0];"
    )
    assert model.initial_probability("A") == pytest.approx(0.2)
