"""Fixed points and attractors of a MaBoSS model, computed with mpbn.

MaBoSS dynamics are a continuous-time Markov chain on Boolean states [1]_: a
node may flip up when its ``rate_up`` is positive and down when its
``rate_down`` is positive. :func:`boolean_functions` turns each node into the
Boolean update function of that chain,

    f_i(x) = (not x_i and [rate_up(x) > 0]) or (x_i and not [rate_down(x) > 0]),

with ``@logic`` replaced by the node's logic and ``$variables`` by their
values. For the usual rates (``@logic ? r : 0`` / ``@logic ? 0 : r``) this is
the node's ``logic``; a node that can neither rise nor fall keeps its value.
The states with f(x) = x are exactly the states MaBoSS never leaves.

:func:`fixed_points` lists those states; :func:`attractors` lists the
attractors of the most permissive semantics (minimal trap spaces) computed by
mpbn [2]_. Fixed points do not depend on the update semantics; a minimal
trap space may be larger than a cyclic attractor of the asynchronous
dynamics that it contains.

Known limits
------------
- A rate that is an arithmetic function of node values (other than
  ``+`` and ``*`` of non-negative terms) cannot be turned into a Boolean
  condition: :class:`NotImplementedError` names the node.
- Rates are assumed non-negative, as MaBoSS requires.

References
----------
.. [1] Stoll G, Viara E, Barillot E, Calzone L. Continuous time Boolean
   modeling for biological signaling: application of Gillespie algorithm.
   BMC Syst Biol 2012;6:116. doi:10.1186/1752-0509-6-116
.. [2] Paulevé L, Kolčák J, Chatain T, Haar S. Reconciling qualitative,
   abstract, and scalable modeling of biological networks. Nat Commun
   2020;11:4256. doi:10.1038/s41467-020-18112-5
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from cartwin.errors import ModelSpecificationError
from cartwin.logic._expr import (
    AttrRef,
    Binary,
    Cond,
    Const,
    Expr,
    NodeRef,
    Unary,
    evaluate,
    walk,
)
from cartwin.logic.network import LogicalModel, LogicalNode

TRUE, FALSE = Const(1.0), Const(0.0)
_DEFAULT_UP = Cond(AttrRef("logic"), TRUE, FALSE)
_DEFAULT_DOWN = Cond(AttrRef("logic"), FALSE, TRUE)


def boolean_functions(model: LogicalModel) -> dict[str, Expr]:
    """The Boolean update function of every node (see the module notes).

    Raises
    ------
    NotImplementedError
        When a rate cannot be reduced to a Boolean condition.
    """
    return {node.name: _update_function(model, node) for node in model.nodes}


def boolean_network(model: LogicalModel) -> dict[str, str]:
    """The update functions as text (``&``, ``|``, ``!``, 0, 1) for mpbn."""
    return {name: _to_boolpy(f) for name, f in boolean_functions(model).items()}


def fixed_points(
    model: LogicalModel,
    *,
    constraints: Mapping[str, int] | None = None,
    limit: int = 0,
) -> list[dict[str, int]]:
    """States that the MaBoSS dynamics of ``model`` never leave.

    Parameters
    ----------
    model : LogicalModel
        The model.
    constraints : mapping node -> 0/1, optional
        Keep only fixed points with these values (fix inputs this way).
    limit : int
        Stop after this many (0: all).

    Returns
    -------
    list of dict
        Each fixed point as ``{node: 0 or 1}``, sorted.
    """
    network = _mpbn_network(model)
    found = _quietly(
        network.fixedpoints, constraints=_checked(model, constraints), limit=limit
    )
    return sorted(found, key=lambda s: tuple(s[n] for n in model.node_names))


def attractors(
    model: LogicalModel,
    *,
    constraints: Mapping[str, int] | None = None,
    reachable_from: Mapping[str, int] | None = None,
    limit: int = 0,
) -> list[dict[str, int | None]]:
    """Most permissive attractors (minimal trap spaces) of ``model``.

    Parameters
    ----------
    constraints : mapping node -> 0/1, optional
        Keep only attractors where these nodes are fixed at these values.
    reachable_from : mapping node -> 0/1, optional
        Keep only attractors reachable from this (possibly partial) state.
    limit : int
        Stop after this many (0: all).

    Returns
    -------
    list of dict
        ``{node: 0, 1 or None}``; None marks a node that keeps changing.
    """
    network = _mpbn_network(model)
    start = _checked(model, reachable_from) or None
    found = _quietly(
        network.attractors,
        constraints=_checked(model, constraints),
        reachable_from=start,
        limit=limit,
        star=None,
    )
    found = [{n: a.get(n) for n in model.node_names} for a in found]
    return sorted(found, key=lambda a: tuple(str(a[n]) for n in model.node_names))


def _checked(model: LogicalModel, values: Mapping[str, int] | None) -> dict[str, int]:
    checked: dict[str, int] = {}
    for name, value in (values or {}).items():
        model.node(name)
        if value not in (0, 1):
            raise ModelSpecificationError(f"node {name!r} value {value!r}; need 0 or 1")
        checked[name] = int(value)
    return checked


def _mpbn_network(model: LogicalModel) -> Any:
    import mpbn

    return mpbn.MPBooleanNetwork(boolean_network(model))


def _quietly(method: Any, **kwargs: Any) -> list[Any]:
    # mpbn 4.x reads its ASP files without closing them (ResourceWarning).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        return list(method(**kwargs))


# --------------------------------------------------------------------------
# Rates to Boolean conditions


def _update_function(model: LogicalModel, node: LogicalNode) -> Expr:
    up = _positive(model, node, node.rate("rate_up") or _DEFAULT_UP)
    down = _positive(model, node, node.rate("rate_down") or _DEFAULT_DOWN)
    me = NodeRef(node.name)
    return _or(_and(_not(me), up), _and(me, _not(down)))


def _positive(model: LogicalModel, node: LogicalNode, rate: Expr) -> Expr:
    """Boolean condition under which ``rate`` is strictly positive."""
    if _is_constant(rate):
        return TRUE if evaluate(rate, {}, model.variables) > 0 else FALSE
    if isinstance(rate, Cond):
        test = _truth(model, node, rate.test)
        then = _positive(model, node, rate.then)
        otherwise = _positive(model, node, rate.otherwise)
        return _or(_and(test, then), _and(_not(test), otherwise))
    if isinstance(rate, Binary) and rate.op in ("+", "*"):
        left = _positive(model, node, rate.left)
        right = _positive(model, node, rate.right)
        return _or(left, right) if rate.op == "+" else _and(left, right)
    try:
        return _truth(model, node, rate)
    except NotImplementedError:
        raise NotImplementedError(
            f"node {node.name!r}: rate {rate!r} is not a Boolean condition"
        ) from None


def _truth(model: LogicalModel, node: LogicalNode, expr: Expr) -> Expr:
    """``expr`` as a Boolean expression of nodes (``@logic`` expanded)."""
    if _is_constant(expr):
        return TRUE if evaluate(expr, {}, model.variables) != 0 else FALSE
    if isinstance(expr, NodeRef):
        return NodeRef(expr.name)
    if isinstance(expr, AttrRef) and expr.name == "logic" and node.logic is not None:
        return _truth(model, node, node.logic)
    if isinstance(expr, Unary) and expr.op == "!":
        return _not(_truth(model, node, expr.operand))
    if isinstance(expr, Binary) and expr.op in ("&", "|", "^"):
        left = _truth(model, node, expr.left)
        right = _truth(model, node, expr.right)
        if expr.op == "&":
            return _and(left, right)
        if expr.op == "|":
            return _or(left, right)
        return _or(_and(left, _not(right)), _and(_not(left), right))
    if isinstance(expr, Cond):
        test = _truth(model, node, expr.test)
        then = _truth(model, node, expr.then)
        return _or(
            _and(test, then), _and(_not(test), _truth(model, node, expr.otherwise))
        )
    raise NotImplementedError(
        f"node {node.name!r}: {expr!r} is not a Boolean expression of nodes"
    )


def _is_constant(expr: Expr) -> bool:
    return not any(isinstance(p, (NodeRef, AttrRef)) for p in walk(expr))


def _and(a: Expr, b: Expr) -> Expr:
    if a == FALSE or b == FALSE:
        return FALSE
    if a == TRUE:
        return b
    return a if b == TRUE else Binary("&", a, b)


def _or(a: Expr, b: Expr) -> Expr:
    if a == TRUE or b == TRUE:
        return TRUE
    if a == FALSE:
        return b
    return a if b == FALSE else Binary("|", a, b)


def _not(a: Expr) -> Expr:
    if a in (TRUE, FALSE):
        return FALSE if a == TRUE else TRUE
    if isinstance(a, Unary) and a.op == "!":
        return a.operand
    return Unary("!", a)


def _to_boolpy(expr: Expr) -> str:
    if isinstance(expr, Const):
        return "1" if expr.value else "0"
    if isinstance(expr, NodeRef):
        return expr.name
    if isinstance(expr, Unary):
        return f"!{_to_boolpy(expr.operand)}"
    if isinstance(expr, Binary):
        return f"({_to_boolpy(expr.left)} {expr.op} {_to_boolpy(expr.right)})"
    raise NotImplementedError(f"not a Boolean expression: {expr!r}")
