"""Tokens and expressions of the MaBoSS language (private).

The grammar follows the MaBoSS 2 reference card [1]_: C-like expressions with
Boolean operators written either as symbols (``&``, ``&&``, ``|``, ``||``,
``!``, ``^``) or words (``AND``, ``OR``, ``NOT``, ``XOR``, any case), the
conditional ``c ? a : b``, comparisons, arithmetic, node names, variables
(``$name``) and node attributes (``@logic``). Precedence, lowest first:
conditional, or, xor, and, equality, relational, additive, multiplicative,
unary.

References
----------
.. [1] Stoll G, Caron B, Viara E, et al. MaBoSS 2.0: an environment for
   stochastic Boolean modeling. Bioinformatics 2017;33(14):2226-2228.
   doi:10.1093/bioinformatics/btx123
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from cartwin.logic.errors import LogicSyntaxError

_WORD_OPS = {"and": "&", "or": "|", "not": "!", "xor": "^"}
_CONSTANTS = {"true": 1.0, "false": 0.0}
_TOKEN_RE = re.compile(
    r"""
    (?P<space>[ \t\r]+)
  | (?P<newline>\n)
  | (?P<comment>//[^\n]*)
  | (?P<block>/\*)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<var>\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<attr>@[A-Za-z_][A-Za-z0-9_]*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"[^"\n]*")
  | (?P<op>&&|\|\||==|!=|<=|>=|[-+*/&|!^?:()<>=;{}\[\],.])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    """One lexical token with its 1-based position."""

    kind: str
    text: str
    line: int
    column: int


def tokenize(text: str, source: str) -> list[Token]:
    """Split MaBoSS text into tokens, dropping blanks and comments.

    Raises
    ------
    LogicSyntaxError
        On a character that starts no token, or an unterminated comment.
    """
    tokens: list[Token] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        column = pos - line_start + 1
        if match is None:
            raise LogicSyntaxError(
                source, line, column, f"unexpected character {text[pos]!r}"
            )
        kind = match.lastgroup or ""
        if kind == "block":
            end = text.find("*/", pos + 2)
            if end < 0:
                raise LogicSyntaxError(source, line, column, "unterminated /* comment")
            chunk = text[pos : end + 2]
            if "\n" in chunk:
                line += chunk.count("\n")
                line_start = pos + chunk.rindex("\n") + 1
            pos = end + 2
            continue
        if kind == "newline":
            line, line_start = line + 1, match.end()
        elif kind not in ("space", "comment"):
            tokens.append(Token(kind, match.group(), line, column))
        pos = match.end()
    tokens.append(Token("eof", "", line, pos - line_start + 1))
    return tokens


# --------------------------------------------------------------------------
# Expression tree


@dataclass(frozen=True)
class Const:
    """A number (``TRUE``/``FALSE`` read as 1/0)."""

    value: float


@dataclass(frozen=True)
class NodeRef:
    """A node name, with where it was written."""

    name: str
    line: int = 0
    column: int = 0


@dataclass(frozen=True)
class VarRef:
    """A ``$variable`` (name without the dollar)."""

    name: str
    line: int = 0
    column: int = 0


@dataclass(frozen=True)
class AttrRef:
    """A node attribute such as ``@logic`` (name without the at sign)."""

    name: str
    line: int = 0
    column: int = 0


@dataclass(frozen=True)
class Unary:
    """``!x`` (Boolean not), ``-x`` or ``+x``."""

    op: str
    operand: Expr


@dataclass(frozen=True)
class Binary:
    """A binary operation; Boolean ``op`` is one of ``& | ^``."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Cond:
    """``test ? then : otherwise``."""

    test: Expr
    then: Expr
    otherwise: Expr


Expr = Const | NodeRef | VarRef | AttrRef | Unary | Binary | Cond

_LEVELS: tuple[tuple[str, ...], ...] = (
    ("|", "||"),
    ("^",),
    ("&", "&&"),
    ("==", "!="),
    ("<", ">", "<=", ">="),
    ("+", "-"),
    ("*", "/"),
)
_CANONICAL = {"||": "|", "&&": "&"}


class Parser:
    """Recursive-descent parser over a token list, shared by .bnd and .cfg."""

    def __init__(self, tokens: list[Token], source: str) -> None:
        self.tokens = tokens
        self.source = source
        self.pos = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.pos]

    def error(self, message: str, token: Token | None = None) -> LogicSyntaxError:
        token = token or self.current
        found = token.text or "end of file"
        return LogicSyntaxError(
            self.source, token.line, token.column, f"{message}, found {found!r}"
        )

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def at(self, *texts: str) -> bool:
        token = self.current
        return token.kind == "op" and token.text in texts

    def expect(self, text: str) -> Token:
        if not self.at(text):
            raise self.error(f"expected {text!r}")
        return self.advance()

    def expect_ident(self, what: str) -> Token:
        if self.current.kind != "ident":
            raise self.error(f"expected {what}")
        return self.advance()

    def expression(self) -> Expr:
        """Parse one expression (the conditional level)."""
        test = self._binary(0)
        if not self.at("?"):
            return test
        self.advance()
        then = self.expression()
        self.expect(":")
        return Cond(test, then, self.expression())

    def _binary(self, level: int) -> Expr:
        if level == len(_LEVELS):
            return self._unary()
        left = self._binary(level + 1)
        while (op := self._binary_op(level)) is not None:
            self.advance()
            left = Binary(op, left, self._binary(level + 1))
        return left

    def _binary_op(self, level: int) -> str | None:
        token = self.current
        ops = _LEVELS[level]
        if token.kind == "op" and token.text in ops:
            return _CANONICAL.get(token.text, token.text)
        word = _WORD_OPS.get(token.text.lower()) if token.kind == "ident" else None
        return word if word in ops and word != "!" else None

    def _unary(self) -> Expr:
        token = self.current
        is_not = token.kind == "ident" and token.text.lower() == "not"
        if is_not or self.at("!", "-", "+"):
            self.advance()
            return Unary("!" if is_not else token.text, self._unary())
        return self._primary()

    def _primary(self) -> Expr:
        token = self.advance()
        if token.kind == "number":
            return Const(float(token.text))
        if token.kind == "var":
            return VarRef(token.text[1:], token.line, token.column)
        if token.kind == "attr":
            return AttrRef(token.text[1:], token.line, token.column)
        if token.kind == "ident":
            if token.text.lower() in _CONSTANTS:
                return Const(_CONSTANTS[token.text.lower()])
            if token.text.lower() in _WORD_OPS:
                raise self.error("expected an operand", token)
            return NodeRef(token.text, token.line, token.column)
        if token.kind == "op" and token.text == "(":
            inner = self.expression()
            self.expect(")")
            return inner
        raise self.error("expected an operand", token)


# --------------------------------------------------------------------------
# Walking, evaluating and printing


def walk(expr: Expr) -> Iterator[Expr]:
    """Yield ``expr`` and every sub-expression, depth first."""
    yield expr
    if isinstance(expr, Unary):
        yield from walk(expr.operand)
    elif isinstance(expr, Binary):
        yield from walk(expr.left)
        yield from walk(expr.right)
    elif isinstance(expr, Cond):
        for part in (expr.test, expr.then, expr.otherwise):
            yield from walk(part)


def evaluate(
    expr: Expr,
    nodes: Mapping[str, bool],
    variables: Mapping[str, float],
    attributes: Mapping[str, float] | None = None,
) -> float:
    """Evaluate ``expr`` with node values, variables and ``@`` attributes.

    Boolean results are 1.0 or 0.0; a non-zero number counts as true.

    Raises
    ------
    KeyError
        When a name is not in the given mappings (callers validate first).
    """
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, NodeRef):
        return 1.0 if nodes[expr.name] else 0.0
    if isinstance(expr, VarRef):
        return float(variables[expr.name])
    if isinstance(expr, AttrRef):
        return float((attributes or {})[expr.name])
    if isinstance(expr, Cond):
        test = evaluate(expr.test, nodes, variables, attributes)
        branch = expr.then if test != 0 else expr.otherwise
        return evaluate(branch, nodes, variables, attributes)
    if isinstance(expr, Unary):
        value = evaluate(expr.operand, nodes, variables, attributes)
        return {"!": float(value == 0), "-": -value, "+": value}[expr.op]
    left = evaluate(expr.left, nodes, variables, attributes)
    right = evaluate(expr.right, nodes, variables, attributes)
    return _apply(expr.op, left, right)


def _apply(op: str, left: float, right: float) -> float:
    if op == "&":
        return float(left != 0 and right != 0)
    if op == "|":
        return float(left != 0 or right != 0)
    if op == "^":
        return float((left != 0) != (right != 0))
    if op == "/":
        return left / right if right != 0 else float("inf")
    table = {
        "==": lambda: float(left == right),
        "!=": lambda: float(left != right),
        "<": lambda: float(left < right),
        ">": lambda: float(left > right),
        "<=": lambda: float(left <= right),
        ">=": lambda: float(left >= right),
        "+": lambda: left + right,
        "-": lambda: left - right,
        "*": lambda: left * right,
    }
    return table[op]()


def to_text(expr: Expr) -> str:
    """Print ``expr`` in MaBoSS syntax, fully parenthesised."""
    if isinstance(expr, Const):
        return f"{expr.value:g}"
    if isinstance(expr, NodeRef):
        return expr.name
    if isinstance(expr, VarRef):
        return f"${expr.name}"
    if isinstance(expr, AttrRef):
        return f"@{expr.name}"
    if isinstance(expr, Unary):
        return f"{expr.op}{to_text(expr.operand)}"
    if isinstance(expr, Binary):
        return f"({to_text(expr.left)} {expr.op} {to_text(expr.right)})"
    return f"({to_text(expr.test)} ? {to_text(expr.then)} : {to_text(expr.otherwise)})"


def is_boolean(expr: Expr) -> bool:
    """True when ``expr`` uses only nodes, 0/1 and Boolean operators."""
    for part in walk(expr):
        if isinstance(part, Const) and part.value not in (0.0, 1.0):
            return False
        if isinstance(part, (VarRef, AttrRef, Cond)):
            return False
        if isinstance(part, Unary) and part.op != "!":
            return False
        if isinstance(part, Binary) and part.op not in ("&", "|", "^"):
            return False
    return True
