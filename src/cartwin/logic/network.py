"""Immutable description of a stochastic Boolean (MaBoSS) model.

A :class:`LogicalModel` holds what a ``.bnd`` and a ``.cfg`` file say: the
nodes with their logic and transition rates, the variables (``$name``), the
run settings, the initial-state distribution and which nodes are internal
(hidden from the reported states). It keeps the original text so that the
engine runs exactly what the files say.

In MaBoSS [1]_ a node flips from 0 to 1 at rate ``rate_up`` and from 1 to 0
at rate ``rate_down``; a node without rates uses ``@logic ? 1 : 0`` and
``@logic ? 0 : 1``. A node without an initial state starts at 0 or 1 with
probability 1/2 each.

References
----------
.. [1] Stoll G, Viara E, Barillot E, Calzone L. Continuous time Boolean
   modeling for biological signaling: application of Gillespie algorithm.
   BMC Syst Biol 2012;6:116. doi:10.1186/1752-0509-6-116
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cartwin.errors import ModelSpecificationError
from cartwin.logic._expr import Expr, to_text


@dataclass(frozen=True)
class LogicalNode:
    """One node of a Boolean network.

    Attributes
    ----------
    name : str
        Node name as written in the ``.bnd`` file.
    attributes : Mapping[str, Expr | str]
        Every attribute of the node block (``logic``, ``rate_up``,
        ``rate_down``, ``description``...), expressions parsed.
    line, column : int
        Where the node block starts (0 when built from another format).
    """

    name: str
    attributes: Mapping[str, Expr | str]
    line: int = 0
    column: int = 0

    @property
    def logic(self) -> Expr | None:
        """The ``logic`` expression, or None when the node has none."""
        value = self.attributes.get("logic")
        return value if not isinstance(value, str) else None

    def rate(self, which: str) -> Expr | None:
        """``rate_up`` or ``rate_down`` expression, None for the default."""
        value = self.attributes.get(which)
        return value if not isinstance(value, str) else None

    def logic_text(self) -> str:
        """The logic printed in MaBoSS syntax ('' when absent)."""
        return to_text(self.logic) if self.logic is not None else ""


@dataclass(frozen=True)
class InitialCondition:
    """Joint initial distribution of some nodes (MaBoSS ``istate``).

    Attributes
    ----------
    nodes : tuple of str
        Nodes the distribution covers.
    probabilities : tuple of (state, probability)
        ``state`` is a tuple of 0/1, one per node; probabilities sum to 1.
    """

    nodes: tuple[str, ...]
    probabilities: tuple[tuple[tuple[int, ...], float], ...]

    def __post_init__(self) -> None:
        total = sum(p for _, p in self.probabilities)
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ModelSpecificationError(
                f"initial state of {list(self.nodes)}: probabilities sum to "
                f"{total:g}, must sum to 1"
            )
        for state, prob in self.probabilities:
            if len(state) != len(self.nodes) or not 0 <= prob <= 1:
                raise ModelSpecificationError(
                    f"initial state of {list(self.nodes)}: bad entry "
                    f"{prob:g} {list(state)} (need one 0/1 per node, 0 <= p <= 1)"
                )

    @classmethod
    def single(cls, node: str, probability_on: float) -> InitialCondition:
        """One node that starts at 1 with ``probability_on``."""
        p = float(probability_on)
        if not 0.0 <= p <= 1.0 or math.isnan(p):
            raise ModelSpecificationError(
                f"initial probability of node {node!r} is {p!r}; allowed 0 to 1"
            )
        return cls((node,), (((0,), 1.0 - p), ((1,), p)))

    def marginal(self, node: str) -> float:
        """Probability that ``node`` starts at 1."""
        index = self.nodes.index(node)
        return float(sum(p for state, p in self.probabilities if state[index] == 1))

    def without(self, nodes: frozenset[str]) -> InitialCondition | None:
        """Marginal distribution of the nodes not in ``nodes`` (None if none)."""
        keep = [i for i, n in enumerate(self.nodes) if n not in nodes]
        if not keep:
            return None
        merged: dict[tuple[int, ...], float] = {}
        for state, prob in self.probabilities:
            key = tuple(state[i] for i in keep)
            merged[key] = merged.get(key, 0.0) + prob
        return InitialCondition(
            tuple(self.nodes[i] for i in keep), tuple(merged.items())
        )

    def as_cmaboss(self) -> tuple[list[str], dict[tuple[int, ...], float]]:
        """Arguments of ``cmaboss`` ``network.set_istate``.

        States of probability 0 are left out: MaBoSS draws a random number for
        them, which would shift the stream of a seeded run away from that of
        an equivalent direct run.
        """
        return list(self.nodes), {s: p for s, p in self.probabilities if p > 0}


@dataclass(frozen=True)
class LogicalModel:
    """A MaBoSS model: network, variables, settings and initial states.

    Build one with :func:`cartwin.logic.load_maboss`,
    :func:`cartwin.logic.load_sbmlqual` or :func:`cartwin.logic.load_tcell_model`.
    """

    name: str
    nodes: tuple[LogicalNode, ...]
    variables: Mapping[str, float]
    settings: Mapping[str, float]
    initial: tuple[InitialCondition, ...]
    internal: frozenset[str]
    bnd_text: str
    cfg_text: str
    bnd_source: str = "<string>"
    cfg_source: str = "<string>"
    _index: Mapping[str, LogicalNode] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "variables", MappingProxyType(dict(self.variables)))
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))
        index = MappingProxyType({node.name: node for node in self.nodes})
        object.__setattr__(self, "_index", index)

    @property
    def node_names(self) -> tuple[str, ...]:
        """Node names in file order."""
        return tuple(node.name for node in self.nodes)

    @property
    def outputs(self) -> tuple[str, ...]:
        """Nodes reported in simulated states (those not internal)."""
        return tuple(n for n in self.node_names if n not in self.internal)

    def node(self, name: str) -> LogicalNode:
        """The node called ``name``.

        Raises
        ------
        ModelSpecificationError
            When the model has no such node.
        """
        try:
            return self._index[name]
        except KeyError:
            raise ModelSpecificationError(
                f"model {self.name!r} has no node {name!r}; nodes: "
                f"{', '.join(self.node_names)}"
            ) from None

    def initial_probability(self, node: str) -> float:
        """Probability that ``node`` starts at 1 under the model's defaults."""
        self.node(node)
        for condition in self.initial:
            if node in condition.nodes:
                return condition.marginal(node)
        return 0.5
