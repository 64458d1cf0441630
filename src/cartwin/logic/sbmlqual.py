"""Read and write Boolean SBML-qual models.

:func:`load_sbmlqual` reads an SBML Level 3 file with the ``qual`` package
[1]_ into a :class:`~cartwin.logic.network.LogicalModel`, by writing the
equivalent MaBoSS text (the same conversion as cmaboss' own SBML reader):

* each qualitative species becomes a node; ``initialLevel`` becomes its
  ``istate`` (a species without one starts at 0 or 1 with probability 1/2,
  as in MaBoSS);
* the transition whose output is a species gives its ``logic``: the ``or`` of
  the function terms of result level 1 when the default term is 0, or the
  negation of the ``or`` of the terms of level 0 when the default is 1;
* a species without a transition, or declared constant, keeps its value;
* all rates are 1 (SBML-qual has no rates).

:func:`to_sbmlqual` writes a model's ``logic`` rules back as SBML-qual.
Rates, variables and joint initial states have no SBML-qual equivalent and
are not written.

Errors carry the line and column of the offending XML element.

Known limits
------------
- Multi-valued species (``maxLevel`` > 1) raise
  :class:`~cartwin.errors.UnsupportedModelError` (a ``NotImplementedError``).
- Two transitions with the same output species raise
  :class:`~cartwin.logic.errors.LogicSyntaxError`.

References
----------
.. [1] Chaouiya C, Bérenguier D, Keating SM, et al. SBML qualitative models:
   a model representation format and infrastructure to foster interactions
   between qualitative modelling formalisms and tools. BMC Syst Biol
   2013;7:135. doi:10.1186/1752-0509-7-135
"""

from __future__ import annotations

import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

from cartwin.errors import DataError, UnsupportedModelError
from cartwin.logic._expr import (
    Binary,
    Const,
    Expr,
    NodeRef,
    Unary,
    is_boolean,
    to_text,
    walk,
)
from cartwin.logic.errors import LogicSyntaxError, UnknownNodeError
from cartwin.logic.maboss_io import parse_maboss
from cartwin.logic.network import LogicalModel

SBML_NS = "http://www.sbml.org/sbml/level3/version1/core"
QUAL_NS = "http://www.sbml.org/sbml/level3/version1/qual/version1"
MATHML_NS = "http://www.w3.org/1998/Math/MathML"
_COMPARE = {"eq", "neq", "geq", "gt", "leq", "lt"}


@dataclass
class _Element:
    tag: str
    attrib: dict[str, str]
    line: int
    column: int
    children: list[_Element] = field(default_factory=list)
    text: str = ""

    def find_all(self, tag: str) -> list[_Element]:
        found = [self] if self.tag == tag else []
        for child in self.children:
            found.extend(child.find_all(tag))
        return found

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.attrib.get(name, default)


def _parse_xml(text: str, source: str) -> _Element:
    """Parse XML into light elements with local tag names and positions."""
    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    stack: list[_Element] = []
    root: list[_Element] = []

    def start(tag: str, attrib: dict[str, str]) -> None:
        local = {k.split(" ")[-1]: v for k, v in attrib.items()}
        element = _Element(
            tag.split(" ")[-1],
            local,
            parser.CurrentLineNumber,
            parser.CurrentColumnNumber + 1,
        )
        (stack[-1].children if stack else root).append(element)
        stack.append(element)

    def end(tag: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(text, True)
    except xml.parsers.expat.ExpatError as exc:
        raise LogicSyntaxError(
            source,
            exc.lineno,
            exc.offset + 1,
            f"XML error: {xml.parsers.expat.ErrorString(exc.code)}",
        )
    return root[0]


def load_sbmlqual(path: str | Path) -> LogicalModel:
    """Read a Boolean SBML-qual file; see the module notes.

    Raises
    ------
    DataError
        The file is missing or unreadable.
    LogicSyntaxError
        Malformed XML, no qualitative species, or an unsupported construct.
    UnknownNodeError
        A function term names a species that does not exist.
    UnsupportedModelError
        A multi-valued species.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError, IsADirectoryError) as exc:
        raise DataError(f"SBML-qual file {path} cannot be read: {exc}") from None
    return parse_sbmlqual(text, source=str(path), name=path.stem)


def parse_sbmlqual(
    text: str, *, source: str = "<sbml>", name: str = "model"
) -> LogicalModel:
    """Parse SBML-qual text; see :func:`load_sbmlqual`."""
    root = _parse_xml(text, source)
    species = _species(root, source)
    logic = _transitions(root, species, source)
    bnd, cfg = _maboss_text(species, logic)
    return parse_maboss(bnd, cfg, name=name, bnd_source=source, cfg_source=source)


def _species(root: _Element, source: str) -> dict[str, _Element]:
    found: dict[str, _Element] = {}
    for element in root.find_all("qualitativeSpecies"):
        sid = element.get("id")
        if not sid:
            raise LogicSyntaxError(
                source, element.line, element.column, "qualitativeSpecies without an id"
            )
        if int(element.get("maxLevel", "1") or 1) > 1:
            raise UnsupportedModelError(
                f"{source}:{element.line}: species {sid!r} has maxLevel "
                f"{element.get('maxLevel')}; only Boolean species are supported"
            )
        found[sid] = element
    if not found:
        raise LogicSyntaxError(
            source, root.line, root.column, "no qual:qualitativeSpecies in the file"
        )
    return found


def _transitions(
    root: _Element, species: dict[str, _Element], source: str
) -> dict[str, Expr]:
    logic: dict[str, Expr] = {}
    for transition in root.find_all("transition"):
        inputs = {
            i.get("id"): i.get("qualitativeSpecies")
            for i in transition.find_all("input")
            if i.get("id")
        }
        rule = _transition_logic(transition, species, inputs, source)
        for output in transition.find_all("output"):
            target = output.get("qualitativeSpecies") or ""
            _known(target, species, output, source)
            if target in logic:
                raise LogicSyntaxError(
                    source,
                    output.line,
                    output.column,
                    f"species {target!r} is the output of two transitions",
                )
            if species[target].get("constant", "false") != "true":
                logic[target] = rule
    return logic


def _transition_logic(
    transition: _Element,
    species: dict[str, _Element],
    inputs: dict[str | None, str | None],
    source: str,
) -> Expr:
    default = transition.find_all("defaultTerm")
    level = int(default[0].get("resultLevel", "0") or 0) if default else 0
    terms = [
        t
        for t in transition.find_all("functionTerm")
        if int(t.get("resultLevel", "0") or 0) != level
    ]
    rule: Expr = Const(0.0)
    for term in terms:
        maths = term.find_all("math")
        if not maths or not maths[0].children:
            raise LogicSyntaxError(
                source, term.line, term.column, "functionTerm without math"
            )
        expr = _mathml(maths[0].children[0], species, inputs, source)
        rule = expr if rule == Const(0.0) else Binary("|", rule, expr)
    return rule if level == 0 else Unary("!", rule)


def _mathml(
    element: _Element,
    species: dict[str, _Element],
    inputs: dict[str | None, str | None],
    source: str,
) -> Expr:
    if element.tag in ("true", "false"):
        return Const(1.0 if element.tag == "true" else 0.0)
    if element.tag == "ci":
        name = element.text.strip()
        name = inputs.get(name) or name
        _known(name, species, element, source)
        return NodeRef(name, element.line, element.column)
    if element.tag != "apply" or not element.children:
        raise LogicSyntaxError(
            source,
            element.line,
            element.column,
            f"unsupported MathML element <{element.tag}>",
        )
    op, args = element.children[0].tag, element.children[1:]
    if op in _COMPARE:
        return _comparison(op, args, element, species, inputs, source)
    parts = [_mathml(a, species, inputs, source) for a in args]
    if op == "not" and len(parts) == 1:
        return Unary("!", parts[0])
    if op in ("and", "or", "xor") and parts:
        symbol = {"and": "&", "or": "|", "xor": "^"}[op]
        expr = parts[0]
        for part in parts[1:]:
            expr = Binary(symbol, expr, part)
        return expr
    raise LogicSyntaxError(
        source,
        element.line,
        element.column,
        f"unsupported MathML operator <{op}/> with {len(parts)} argument(s)",
    )


def _comparison(
    op: str,
    args: list[_Element],
    element: _Element,
    species: dict[str, _Element],
    inputs: dict[str | None, str | None],
    source: str,
) -> Expr:
    tags = [a.tag for a in args]
    if sorted(tags) != ["ci", "cn"]:
        raise LogicSyntaxError(
            source,
            element.line,
            element.column,
            f"<{op}/> must compare one <ci> with one <cn>",
        )
    node = _mathml(args[tags.index("ci")], species, inputs, source)
    value = float(args[tags.index("cn")].text.strip())
    if tags[0] == "cn":
        op = {"geq": "leq", "gt": "lt", "leq": "geq", "lt": "gt"}.get(op, op)
    test = {
        "eq": lambda x: x == value,
        "neq": lambda x: x != value,
        "geq": lambda x: x >= value,
        "gt": lambda x: x > value,
        "leq": lambda x: x <= value,
        "lt": lambda x: x < value,
    }[op]
    when_on, when_off = test(1.0), test(0.0)
    if when_on == when_off:
        return Const(1.0 if when_on else 0.0)
    return node if when_on else Unary("!", node)


def _known(
    name: str, species: dict[str, _Element], element: _Element, source: str
) -> None:
    if name not in species:
        raise UnknownNodeError(
            source,
            element.line,
            element.column,
            f"unknown qualitative species {name!r}",
        )


def _maboss_text(
    species: dict[str, _Element], logic: dict[str, Expr]
) -> tuple[str, str]:
    bnd, cfg = [], []
    for sid, element in species.items():
        rule = to_text(logic[sid]) if sid in logic else sid
        bnd.append(f"Node {sid} {{\n  logic = {rule};\n}}\n")
        level = element.get("initialLevel")
        if level is not None:
            cfg.append(f"{sid}.istate = {1 if int(level) > 0 else 0};")
    return "\n".join(bnd), "\n".join(cfg) + "\n"


# --------------------------------------------------------------------------
# Writing


def to_sbmlqual(model: LogicalModel) -> str:
    """SBML-qual (L3V1, qual V1) text of the ``logic`` rules of ``model``.

    Raises
    ------
    UnsupportedModelError
        When a node's logic is not a pure Boolean expression of nodes.
    """
    header = (
        f'<sbml xmlns="{SBML_NS}" level="3" version="1" '
        f'xmlns:qual="{QUAL_NS}" qual:required="true">'
    )
    compartments = (
        '    <listOfCompartments><compartment id="cell" constant="true"/>'
        "</listOfCompartments>"
    )
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        header,
        f"  <model id={quoteattr(_sid(model.name))}>",
        compartments,
        "    <qual:listOfQualitativeSpecies>",
    ]
    lines += [_species_xml(model, name) for name in model.node_names]
    lines.append("    </qual:listOfQualitativeSpecies>")
    lines.append("    <qual:listOfTransitions>")
    for node in model.nodes:
        logic = node.logic
        if logic is None or logic == NodeRef(node.name) or _is_self(logic, node.name):
            continue
        if not is_boolean(logic):
            raise UnsupportedModelError(
                f"node {node.name!r}: logic {to_text(logic)} is not Boolean; "
                "SBML-qual export needs &, |, !, ^, 0 and 1 over nodes"
            )
        lines.append(_transition_xml(node.name, logic))
    lines += ["    </qual:listOfTransitions>", "  </model>", "</sbml>", ""]
    return "\n".join(lines)


def _sid(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"m_{cleaned}"


def _is_self(logic: Expr, name: str) -> bool:
    return isinstance(logic, NodeRef) and logic.name == name


def _species_xml(model: LogicalModel, name: str) -> str:
    level = ""
    p = model.initial_probability(name)
    if p in (0.0, 1.0) and any(name in c.nodes for c in model.initial):
        level = f' qual:initialLevel="{int(p)}"'
    return (
        f'      <qual:qualitativeSpecies qual:id="{name}" qual:compartment="cell"'
        f' qual:constant="false" qual:maxLevel="1"{level}/>'
    )


def _transition_xml(name: str, logic: Expr) -> str:
    regulators = sorted({p.name for p in walk(logic) if isinstance(p, NodeRef)})
    inputs = "".join(
        f'<qual:input qual:id="in_{name}_{r}" qual:qualitativeSpecies="{r}" '
        'qual:transitionEffect="none"/>'
        for r in regulators
    )
    return (
        f'      <qual:transition qual:id="tr_{name}">\n'
        f"        <qual:listOfInputs>{inputs}</qual:listOfInputs>\n"
        f'        <qual:listOfOutputs><qual:output qual:qualitativeSpecies="{name}" '
        'qual:transitionEffect="assignmentLevel"/></qual:listOfOutputs>\n'
        "        <qual:listOfFunctionTerms>\n"
        '          <qual:defaultTerm qual:resultLevel="0"/>\n'
        '          <qual:functionTerm qual:resultLevel="1">\n'
        f'            <math xmlns="{MATHML_NS}">{_to_mathml(logic)}</math>\n'
        "          </qual:functionTerm>\n"
        "        </qual:listOfFunctionTerms>\n"
        "      </qual:transition>"
    )


def _to_mathml(expr: Expr) -> str:
    if isinstance(expr, Const):
        return "<true/>" if expr.value else "<false/>"
    if isinstance(expr, NodeRef):
        return f'<apply><eq/><ci>{expr.name}</ci><cn type="integer">1</cn></apply>'
    if isinstance(expr, Unary):
        return f"<apply><not/>{_to_mathml(expr.operand)}</apply>"
    assert isinstance(expr, Binary)
    op = {"&": "and", "|": "or", "^": "xor"}[expr.op]
    return f"<apply><{op}/>{_to_mathml(expr.left)}{_to_mathml(expr.right)}</apply>"
