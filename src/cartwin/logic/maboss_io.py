"""Read MaBoSS models (``.bnd`` network + ``.cfg`` configuration).

:func:`load_maboss` parses both files with cartwin's own parser, so that a
syntax error is reported with file, line and column (MaBoSS itself gives the
line only), then checks that every name used exists:

* a node named in a ``logic`` or rate expression must be declared in the
  ``.bnd`` file (:class:`~cartwin.logic.errors.UnknownNodeError`);
* a ``$variable`` must be set in the ``.cfg`` file;
* an ``@attribute`` must be an attribute of the same node;
* a ``.cfg`` line may set only known run settings and attributes
  (``istate``, ``is_internal``, ``refstate``) of declared nodes.

Nothing is stored: the result is an immutable
:class:`~cartwin.logic.network.LogicalModel` that keeps the original text.

Known limits
------------
- PopMaBoSS (population) syntax and the ``division``/``death`` blocks are not
  supported; they raise :class:`LogicSyntaxError` at the first unknown token.
- An ``istate`` must be 0, 1, ``TRUE``, ``FALSE``, -1 (random) or a list
  ``p [s], ...``; a bare probability such as ``0.3`` is rejected.

References
----------
.. [1] Stoll G, Caron B, Viara E, et al. MaBoSS 2.0: an environment for
   stochastic Boolean modeling. Bioinformatics 2017;33(14):2226-2228.
   doi:10.1093/bioinformatics/btx123
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cartwin.errors import DataError
from cartwin.logic._expr import (
    AttrRef,
    Expr,
    NodeRef,
    Parser,
    Token,
    VarRef,
    evaluate,
    tokenize,
    walk,
)
from cartwin.logic.errors import LogicSyntaxError, UnknownNodeError
from cartwin.logic.network import InitialCondition, LogicalModel, LogicalNode

#: Run settings a ``.cfg`` file may set (MaBoSS 2 reference card).
RUN_SETTINGS = frozenset(
    {
        "time_tick",
        "max_time",
        "sample_count",
        "discrete_time",
        "use_physrandgen",
        "use_glibcrandgen",
        "use_mtrandgen",
        "seed_pseudorandom",
        "display_traj",
        "statdist_traj_count",
        "statdist_cluster_threshold",
        "thread_count",
        "statdist_similarity_cache_max_size",
        "init_pop",
    }
)
_NODE_SETTINGS = frozenset({"istate", "is_internal", "refstate"})


def load_maboss(bnd: str | Path, cfg: str | Path) -> LogicalModel:
    """Read and check a MaBoSS model from its ``.bnd`` and ``.cfg`` files.

    Parameters
    ----------
    bnd, cfg : str or Path
        The network and configuration files (UTF-8 text).

    Returns
    -------
    LogicalModel
        Named after the ``.bnd`` file stem.

    Raises
    ------
    DataError
        A file is missing or not UTF-8 text.
    LogicSyntaxError
        A syntax error, with file, line and column.
    UnknownNodeError
        A name that the model does not declare, with file, line and column.
    """
    bnd_path, cfg_path = Path(bnd), Path(cfg)
    return parse_maboss(
        _read(bnd_path),
        _read(cfg_path),
        name=bnd_path.stem,
        bnd_source=str(bnd_path),
        cfg_source=str(cfg_path),
    )


def parse_maboss(
    bnd_text: str,
    cfg_text: str,
    *,
    name: str = "model",
    bnd_source: str = "<bnd>",
    cfg_source: str = "<cfg>",
) -> LogicalModel:
    """Parse and check MaBoSS text; see :func:`load_maboss`."""
    nodes = parse_bnd(bnd_text, bnd_source)
    config = parse_cfg(cfg_text, cfg_source, tuple(n.name for n in nodes))
    _check_references(nodes, config, bnd_source)
    return LogicalModel(
        name=name,
        nodes=nodes,
        variables=config.variables,
        settings=config.settings,
        initial=config.initial,
        internal=frozenset(n for n, flag in config.internal.items() if flag),
        bnd_text=bnd_text,
        cfg_text=cfg_text,
        bnd_source=bnd_source,
        cfg_source=cfg_source,
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"MaBoSS file not found: {path}") from None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise DataError(f"MaBoSS file {path} is not UTF-8 text: {exc}") from None


# --------------------------------------------------------------------------
# .bnd


def parse_bnd(text: str, source: str = "<bnd>") -> tuple[LogicalNode, ...]:
    """Parse the node blocks of a ``.bnd`` text.

    Raises
    ------
    LogicSyntaxError
        On a syntax error or a node or attribute declared twice.
    """
    parser = Parser(tokenize(text, source), source)
    nodes: dict[str, LogicalNode] = {}
    while parser.current.kind != "eof":
        node = _node_block(parser)
        if node.name in nodes:
            raise LogicSyntaxError(
                source, node.line, node.column, f"node {node.name!r} declared twice"
            )
        nodes[node.name] = node
    if not nodes:
        raise LogicSyntaxError(source, 1, 1, "no node declared")
    return tuple(nodes.values())


def _node_block(parser: Parser) -> LogicalNode:
    keyword = parser.current
    if keyword.kind != "ident" or keyword.text.lower() != "node":
        raise parser.error("expected 'Node'")
    parser.advance()
    name = parser.expect_ident("a node name")
    parser.expect("{")
    attributes: dict[str, Expr | str] = {}
    while not parser.at("}"):
        attr = parser.expect_ident("an attribute name or '}'")
        if attr.text in attributes:
            raise parser.error(f"attribute {attr.text!r} set twice", attr)
        parser.expect("=")
        if parser.current.kind == "string":
            attributes[attr.text] = parser.advance().text[1:-1]
        else:
            attributes[attr.text] = parser.expression()
        parser.expect(";")
    parser.expect("}")
    return LogicalNode(name.text, attributes, name.line, name.column)


# --------------------------------------------------------------------------
# .cfg


@dataclass
class _Config:
    variables: dict[str, float] = field(default_factory=dict)
    settings: dict[str, float] = field(default_factory=dict)
    initial: tuple[InitialCondition, ...] = ()
    internal: dict[str, bool] = field(default_factory=dict)


def parse_cfg(text: str, source: str, node_names: tuple[str, ...]) -> _Config:
    """Parse a ``.cfg`` text against the declared ``node_names``.

    Raises
    ------
    LogicSyntaxError
        On a syntax error or an unknown run setting or node attribute.
    UnknownNodeError
        On a node or variable that is not declared.
    """
    parser = Parser(tokenize(text, source), source)
    config = _Config()
    initial: dict[tuple[str, ...], InitialCondition] = {}
    known = frozenset(node_names)
    while parser.current.kind != "eof":
        _cfg_statement(parser, config, initial, known)
    config.initial = tuple(initial.values())
    return config


def _cfg_statement(
    parser: Parser,
    config: _Config,
    initial: dict[tuple[str, ...], InitialCondition],
    known: frozenset[str],
) -> None:
    start = parser.current
    if start.kind == "var":
        parser.advance()
        parser.expect("=")
        value = _constant(parser, config.variables)
        config.variables[start.text[1:]] = value
    elif parser.at("["):
        nodes = _node_list(parser, known)
        _expect_attr(parser, "istate")
        condition = _joint_istate(parser, nodes, config.variables)
        _replace_initial(initial, condition)
    elif start.kind == "ident":
        _ident_statement(parser, config, initial, known)
    else:
        raise parser.error("expected a setting, '$variable' or '['")
    parser.expect(";")


def _ident_statement(
    parser: Parser,
    config: _Config,
    initial: dict[tuple[str, ...], InitialCondition],
    known: frozenset[str],
) -> None:
    name = parser.advance()
    if not parser.at("."):
        if name.text not in RUN_SETTINGS:
            raise parser.error(
                f"unknown run setting {name.text!r} (allowed: "
                f"{', '.join(sorted(RUN_SETTINGS))})",
                name,
            )
        parser.expect("=")
        config.settings[name.text] = _constant(parser, config.variables)
        return
    _check_node(parser, name, known)
    attr = _expect_attr(parser, *_NODE_SETTINGS)
    if attr.text == "istate":
        _replace_initial(initial, _single_istate(parser, name, config.variables))
        return
    value = _constant(parser, config.variables)
    if attr.text == "is_internal":
        config.internal[name.text] = value != 0


def _check_node(parser: Parser, token: Token, known: frozenset[str]) -> None:
    if token.text not in known:
        raise UnknownNodeError(
            parser.source,
            token.line,
            token.column,
            f"unknown node {token.text!r} (not declared in the .bnd file)",
        )


def _expect_attr(parser: Parser, *allowed: str) -> Token:
    parser.expect(".")
    attr = parser.expect_ident("a node attribute")
    if attr.text not in allowed:
        raise parser.error(
            f"node attribute must be one of {', '.join(sorted(allowed))}", attr
        )
    parser.expect("=")
    return attr


def _constant(parser: Parser, variables: Mapping[str, float]) -> float:
    expr = parser.expression()
    for part in walk(expr):
        if isinstance(part, VarRef) and part.name not in variables:
            raise UnknownNodeError(
                parser.source,
                part.line,
                part.column,
                f"variable ${part.name} used before it is set",
            )
        if isinstance(part, (NodeRef, AttrRef)):
            raise LogicSyntaxError(
                parser.source,
                part.line,
                part.column,
                f"a .cfg value must be a number, found {part.name!r}",
            )
    return evaluate(expr, {}, variables)


def _node_list(parser: Parser, known: frozenset[str]) -> tuple[str, ...]:
    parser.expect("[")
    names = [parser.expect_ident("a node name")]
    while parser.at(","):
        parser.advance()
        names.append(parser.expect_ident("a node name"))
    parser.expect("]")
    for token in names:
        _check_node(parser, token, known)
    return tuple(token.text for token in names)


def _single_istate(
    parser: Parser, node: Token, variables: Mapping[str, float]
) -> InitialCondition:
    if parser.at("-") or parser.current.kind in ("number", "ident"):
        start = parser.current
        save = parser.pos
        value = _constant(parser, variables)
        if not parser.at("["):
            if value == -1:
                return InitialCondition.single(node.text, 0.5)
            if value in (0.0, 1.0):
                return InitialCondition.single(node.text, value)
            raise parser.error(
                f"istate of {node.text!r} must be 0, 1, -1 or 'p0 [0], p1 [1]'", start
            )
        parser.pos = save
    return _joint_istate(parser, (node.text,), variables)


def _joint_istate(
    parser: Parser, nodes: tuple[str, ...], variables: Mapping[str, float]
) -> InitialCondition:
    entries = [_istate_entry(parser, len(nodes), variables)]
    while parser.at(","):
        parser.advance()
        entries.append(_istate_entry(parser, len(nodes), variables))
    total = sum(p for _, p in entries)
    if total <= 0:
        raise parser.error(f"istate of {list(nodes)}: probabilities sum to 0")
    merged: dict[tuple[int, ...], float] = {}
    for state, prob in entries:
        merged[state] = merged.get(state, 0.0) + prob / total
    return InitialCondition(nodes, tuple(merged.items()))


def _istate_entry(
    parser: Parser, width: int, variables: Mapping[str, float]
) -> tuple[tuple[int, ...], float]:
    start = parser.current
    prob = _constant(parser, variables)
    if prob < 0:
        raise parser.error("istate probability must be >= 0", start)
    parser.expect("[")
    values = [_bit(parser)]
    while parser.at(","):
        parser.advance()
        values.append(_bit(parser))
    parser.expect("]")
    if len(values) != width:
        raise parser.error(f"istate needs {width} value(s) per entry", start)
    return tuple(values), prob


def _bit(parser: Parser) -> int:
    token = parser.current
    if token.kind != "number" or token.text not in ("0", "1"):
        raise parser.error("expected 0 or 1")
    parser.advance()
    return int(token.text)


def _replace_initial(
    initial: dict[tuple[str, ...], InitialCondition], condition: InitialCondition
) -> None:
    # A later istate of a node replaces any earlier one that covers it.
    for nodes in [k for k in initial if set(k) & set(condition.nodes)]:
        del initial[nodes]
    initial[condition.nodes] = condition


# --------------------------------------------------------------------------
# Cross-checks


def _check_references(
    nodes: tuple[LogicalNode, ...], config: _Config, source: str
) -> None:
    names = {node.name for node in nodes}
    for node in nodes:
        for attr_name, expr in node.attributes.items():
            if isinstance(expr, str):
                continue
            for part in walk(expr):
                _check_part(part, node, attr_name, names, config, source)


def _check_part(
    part: Expr,
    node: LogicalNode,
    attr_name: str,
    names: set[str],
    config: _Config,
    source: str,
) -> None:
    where = f"in {attr_name} of node {node.name!r}"
    if isinstance(part, NodeRef) and part.name not in names:
        raise UnknownNodeError(
            source, part.line, part.column, f"unknown node {part.name!r} {where}"
        )
    if isinstance(part, VarRef) and part.name not in config.variables:
        raise UnknownNodeError(
            source,
            part.line,
            part.column,
            f"variable ${part.name} {where} is not set in the .cfg file",
        )
    if isinstance(part, AttrRef) and part.name not in node.attributes:
        raise UnknownNodeError(
            source,
            part.line,
            part.column,
            f"@{part.name} {where}: node has no attribute {part.name!r}",
        )
