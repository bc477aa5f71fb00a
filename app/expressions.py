"""The playground's safe expression language.

Users write one expression, such as a custom module's ``__call__`` (``x @ weight + bias``) or a
loss over ``out`` and ``x`` (``mean((out - x) ** 2)``). The text is never evaluated as Python:
``parse_expression`` parses it with :mod:`ast`, checks every node against a whitelist, and builds
a tree of closures that calls ``jax.numpy`` / ``jax.nn`` directly. The result works inside
``jax.jit``, ``jax.grad`` and ``jax.vmap``.

The language
------------
* Numbers: ``2``, ``0.5``, ``1e-3``. Integers up to 10**9 in size, floats up to 1e30. In
  arithmetic every number is a float (``2`` means ``2.0``); only indices and options such as
  ``axis=`` take whole numbers.
* Operators ``+ - * / ** @ %``, unary ``-`` and ``+``, parentheses.
* The caller's variable names (``x``, ``weight``, ``out``...) and the constants ``pi`` and ``e``.
* ``.T`` (transpose) on any value; no other attribute.
* Indexing with whole numbers, slices of whole numbers, ``...`` and ``None`` (a new axis):
  ``x[0]``, ``x[-1]``, ``x[:, 1:3]``, ``x[::2]``, ``x[..., 0]``, ``x[None, :]``, ``(x @ w)[0]``.
* Calls to the functions of :data:`ALLOWED_FUNCTIONS`, written bare (``sin(x)``, ``relu(x)``) or
  with their prefix (``jnp.sin(x)``, ``jax.nn.relu(x)``), with the options listed there
  (``mean(out, axis=0)``, ``reshape(x, (2, 3))``, ``one_hot(x, 4)``).
* Comparisons ``< <= > >=`` only as the condition of ``where``: ``where(x > 0, x, 0.1 * x)``.

Nothing else: no other names, attributes, keyword options, strings, lambdas, comprehensions,
``and``/``or``/``not``, conditional expressions, assignments or statements. The text must be
plain ASCII on one line.

Numbers and Python
------------------
No arithmetic is ever done on Python numbers: when both sides of an operator are plain numbers,
the left one is made a float32 array (``9 ** 9 ** 9`` becomes
``9.0 ** jnp.float32(9.0) ** 9.0``), so nothing can make Python compute a huge number. Constant
"bombs" are refused before that: a part made only of numbers whose size passes the limit of
numbers (``9**9**9``, ``1e20 * 1e20``) is an error, found in float64 arithmetic that
costs the same for ``9**9**9`` as for ``2**3``. The canonical Python text of
:meth:`Expression.to_python` is exactly what ``evaluate`` runs, so exported code reproduces the
playground's values to the bit.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import keyword
import operator
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "ALLOWED_CONSTANTS",
    "ALLOWED_FUNCTIONS",
    "Expression",
    "ExpressionError",
    "parse_expression",
]

MAX_INT_LITERAL = 10**9
MAX_FLOAT_LITERAL = 1e30
MAX_AXIS = 64
MAX_NUM_CLASSES = 10_000
MAX_DDOF = 100
MAX_SEQUENCE_LENGTH = 64

_Evaluator = Callable[[Mapping[str, Any]], Any]


class ExpressionError(ValueError):
    """An expression that cannot be used, explained in plain words.

    ``message`` is the explanation (also ``str(error)``); ``position`` is the 0-based column of
    the offending part of the text, or None. Messages count columns from 1.
    """

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message, position)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------------------------
# The whitelist


@dataclass(frozen=True)
class _Param:
    """One argument of a whitelisted function.

    ``kind`` is "array" (any expression), "condition" (an expression or a comparison), "arrays"
    (a tuple of expressions), "labels" (an expression cast with jnp.int32), or a static kind
    parsed from literals: "axis", "int_axis", "shape_axes", "shape", "bool", "num_classes",
    "ddof".
    """

    name: str
    kind: str
    default: str | None = None  # shown in usage texts; None means required
    positional: bool = True  # may be given by position (positional params form a prefix)
    keyword: bool = True  # may be given as name=value

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass(frozen=True)
class _Function:
    qualified: str
    impl: Callable[..., Any]
    params: tuple[_Param, ...]

    @property
    def bare(self) -> str:
        return self.qualified.rsplit(".", 1)[1]

    def param(self, name: str) -> _Param | None:
        for param in self.params:
            if param.name == name and param.keyword:
                return param
        return None

    def usage(self) -> str:
        parts = [p.name if p.required else f"{p.name}={p.default}" for p in self.params]
        return f"{self.bare}({', '.join(parts)})"


_ARRAY_KINDS = frozenset({"array", "condition", "arrays", "labels"})
_X = _Param("x", "array", keyword=False)
_Y = _Param("y", "array", keyword=False)
_AXIS = _Param("axis", "axis", "None")
_KEEPDIMS = _Param("keepdims", "bool", "False", positional=False)

_JNP_ELEMENTWISE = (
    "sin cos tan tanh sinh cosh arcsin arccos arctan arcsinh arccosh arctanh exp exp2 expm1 log"
    " log2 log10 log1p sqrt cbrt square abs sign reciprocal floor ceil zeros_like ones_like"
    " float32"
).split()
_JNP_BINARY = "maximum minimum power arctan2 dot matmul outer".split()
_JNP_REDUCTIONS = "sum mean max min prod".split()
_NN_ELEMENTWISE = (
    "relu relu6 sigmoid log_sigmoid softplus soft_sign silu swish selu mish hard_tanh"
    " hard_sigmoid hard_silu"
).split()


def _build_registry() -> dict[str, _Function]:
    specs: list[tuple[str, str, tuple[_Param, ...]]] = []
    specs += [("jnp", name, (_X,)) for name in _JNP_ELEMENTWISE]
    specs += [("jnp", name, (_X, _Y)) for name in _JNP_BINARY]
    specs += [("jnp", name, (_X, _AXIS, _KEEPDIMS)) for name in _JNP_REDUCTIONS]
    ddof = _Param("ddof", "ddof", "0", positional=False)
    specs += [("jnp", name, (_X, _AXIS, ddof, _KEEPDIMS)) for name in ("var", "std")]
    int_axis_none = _Param("axis", "int_axis", "None")
    int_axis_last = _Param("axis", "int_axis", "-1")
    int_axis_first = _Param("axis", "int_axis", "0")
    specs += [
        ("jnp", "where", (_Param("condition", "condition", keyword=False), _X, _Y)),
        ("jnp", "clip", (_X, _Param("min", "array", "None"), _Param("max", "array", "None"))),
        ("jnp", "cumsum", (_X, int_axis_none)),
        ("jnp", "cumprod", (_X, int_axis_none)),
        ("jnp", "sort", (_X, int_axis_last)),
        ("jnp", "flip", (_X, _AXIS)),
        ("jnp", "squeeze", (_X, _AXIS)),
        ("jnp", "expand_dims", (_X, _Param("axis", "axis"))),
        ("jnp", "transpose", (_X, _Param("axes", "shape_axes", "None"))),
        ("jnp", "reshape", (_X, _Param("shape", "shape"))),
        ("jnp", "concatenate", (_Param("arrays", "arrays", keyword=False), int_axis_first)),
        ("jnp", "stack", (_Param("arrays", "arrays", keyword=False), int_axis_first)),
    ]
    specs += [("jax.nn", name, (_X,)) for name in _NN_ELEMENTWISE]
    specs += [
        ("jax.nn", "gelu", (_X, _Param("approximate", "bool", "True"))),
        ("jax.nn", "elu", (_X, _Param("alpha", "array", "1.0"))),
        ("jax.nn", "celu", (_X, _Param("alpha", "array", "1.0"))),
        ("jax.nn", "leaky_relu", (_X, _Param("negative_slope", "array", "0.01"))),
        ("jax.nn", "softmax", (_X, _Param("axis", "axis", "-1"))),
        ("jax.nn", "log_softmax", (_X, _Param("axis", "axis", "-1"))),
        ("jax.nn", "logsumexp", (_X, _AXIS, _KEEPDIMS)),
        (
            "jax.nn",
            "standardize",
            (
                _X,
                _Param("axis", "axis", "-1"),
                _Param("epsilon", "array", "1e-05", positional=False),
            ),
        ),
        ("jax.nn", "glu", (_X, int_axis_last)),
        (
            "jax.nn",
            "one_hot",
            (
                _Param("x", "labels", keyword=False),
                _Param("num_classes", "num_classes"),
                _Param("axis", "int_axis", "-1", positional=False),
            ),
        ),
    ]
    namespaces = {"jnp": jnp, "jax.nn": jax.nn}
    registry: dict[str, _Function] = {}
    for prefix, name, params in specs:
        impl = getattr(namespaces[prefix], name)
        registry[f"{prefix}.{name}"] = _Function(f"{prefix}.{name}", impl, params)
    return registry


_REGISTRY: dict[str, _Function] = _build_registry()
_JNP_NAMES = frozenset(q.split(".")[-1] for q in _REGISTRY if q.startswith("jnp."))
_NN_NAMES = frozenset(q.split(".")[-1] for q in _REGISTRY if q.startswith("jax.nn."))
assert not _JNP_NAMES & _NN_NAMES, "a bare name must resolve to exactly one function"

#: Every callable function: bare name -> qualified Python name ("relu" -> "jax.nn.relu").
ALLOWED_FUNCTIONS: dict[str, str] = {
    spec.bare: qualified for qualified, spec in sorted(_REGISTRY.items(), key=lambda i: i[0])
}
#: Named constants: bare name -> qualified Python name. ``jnp.pi`` and ``jnp.e`` work too.
ALLOWED_CONSTANTS: dict[str, str] = {"pi": "jnp.pi", "e": "jnp.e"}
_CONSTANT_VALUES: dict[str, float] = {"pi": float(jnp.pi), "e": float(jnp.e)}

_FUNCTION_EXAMPLES = "sin, exp, tanh, relu, sigmoid, mean, sum, maximum, where"
_OTHER_LIBRARIES = frozenset({"np", "numpy", "math", "torch", "scipy", "tf", "jax_numpy"})
_RESERVED_NAMES = frozenset({"jnp", "jax"})

_BINARY_OPERATORS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.MatMult: operator.matmul,
    ast.Mod: operator.mod,
}
_FORBIDDEN_OPERATOR_SYMBOLS: dict[type[ast.AST], str] = {
    ast.FloorDiv: "//",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}
_COMPARISONS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_FORBIDDEN_NODES: dict[type[ast.AST], str] = {
    ast.Lambda: "'lambda' is not allowed in an expression",
    ast.IfExp: "conditional expressions (a if c else b) are not allowed; use where(c, a, b)",
    ast.BoolOp: "'and' and 'or' are not allowed in an expression",
    ast.ListComp: "list comprehensions are not allowed in an expression",
    ast.SetComp: "set comprehensions are not allowed in an expression",
    ast.DictComp: "dict comprehensions are not allowed in an expression",
    ast.GeneratorExp: "generator expressions are not allowed in an expression",
    ast.Dict: "dictionaries are not allowed in an expression",
    ast.Set: "sets are not allowed in an expression",
    ast.JoinedStr: "f-strings are not allowed in an expression",
    ast.FormattedValue: "f-strings are not allowed in an expression",
    ast.Starred: "'*' unpacking is not allowed in an expression",
    ast.NamedExpr: "':=' (assignment) is not allowed in an expression",
    ast.Await: "'await' is not allowed in an expression",
    ast.Yield: "'yield' is not allowed in an expression",
    ast.YieldFrom: "'yield' is not allowed in an expression",
    ast.List: (
        "lists and tuples are only allowed as options, like axis=(0, 1) or reshape(x, (2, 3)),"
        " and as the arrays of concatenate or stack"
    ),
    ast.Tuple: (
        "lists and tuples are only allowed as options, like axis=(0, 1) or reshape(x, (2, 3)),"
        " and as the arrays of concatenate or stack"
    ),
    ast.Slice: "slices like 1:3 are only allowed inside [...]",
}
_MARKER_NODES = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)


# --------------------------------------------------------------------------------------------
# The public API


@dataclass(frozen=True, eq=False)
class Expression:
    """A validated expression, ready to evaluate.

    ``text`` is what the user wrote, ``names`` the variables it uses, ``functions`` the
    qualified functions it calls (``"jnp.sin"``, ``"jax.nn.relu"``). Two expressions are equal
    (and hash the same) when their canonical Python text is equal.
    """

    text: str
    names: frozenset[str]
    functions: frozenset[str]
    _canonical: str = field(repr=False)
    _tree: ast.expr = field(repr=False)
    _evaluator: _Evaluator = field(repr=False)
    parts: int = 0
    """Its parts (numbers, names, operations, calls), as ``max_nodes`` counts them."""

    def evaluate(self, env: Mapping[str, Any]) -> jax.Array:
        """Compute the expression with ``env`` giving a value for every variable it uses."""
        return jnp.asarray(self._evaluator(env))

    def to_python(self, rename: Mapping[str, str] | None = None) -> str:
        """Canonical Python source with explicit prefixes, e.g. ``jax.nn.relu(x @ w)``.

        ``rename`` maps variables to dotted names for exported code (``{"w": "self.w"}``).
        Parsing the result again gives an equal expression (the text may be longer).
        """
        if not rename:
            return self._canonical
        for target in rename.values():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", target):
                raise ValueError(f"cannot rename a variable to {target!r}: use a dotted name")
        tree = copy.deepcopy(self._tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in rename and node.id in self.names:
                node.id = rename[node.id]
        return ast.unparse(tree)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Expression):
            return NotImplemented
        return self._canonical == other._canonical

    def __hash__(self) -> int:
        return hash(("Expression", self._canonical))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (self.text, self._canonical, tuple(sorted(self.names))))


def _restore(text: str, canonical: str, names: tuple[str, ...]) -> Expression:
    """Rebuild a pickled expression from its canonical text."""
    size = len(canonical) + 1
    rebuilt = parse_expression(canonical, names, max_length=size, max_nodes=size, max_depth=size)
    return dataclasses.replace(rebuilt, text=text)


def parse_expression(
    text: str,
    variables: Iterable[str],
    *,
    max_length: int = 500,
    max_nodes: int = 200,
    max_depth: int = 32,
) -> Expression:
    """Validate ``text`` against the language and the limits; raise ExpressionError if not."""
    if not isinstance(text, str):
        raise ExpressionError(f"the expression must be text, not {type(text).__name__}")
    allowed_variables = _check_variables(variables)
    if len(text) > max_length:
        raise ExpressionError(
            f"expression is {len(text)} characters long; the limit is {max_length} "
            "(max_expression_length, PLAYGROUND_MAX_EXPRESSION_LENGTH)"
        )
    _check_characters(text)
    source = text.strip(" ")
    shift = len(text) - len(text.lstrip(" "))
    if not source:
        raise ExpressionError("the expression is empty: write one, like x @ weight + bias")
    _check_brackets(source, shift, max_depth)
    tree = _parse_syntax(source, shift)
    parts = _check_size(tree, shift, max_nodes, max_depth)
    builder = _Builder(source, shift, allowed_variables)
    try:
        built = builder.top(tree.body)
        canonical = ast.unparse(built.tree)
        _check_constant_parts(tree.body, source, shift, allowed_variables)
    except RecursionError:
        raise ExpressionError("the expression is nested too deeply") from None
    return Expression(
        text=text,
        names=frozenset(builder.names),
        functions=frozenset(builder.functions),
        _canonical=canonical,
        _tree=built.tree,
        _evaluator=built.run,
        parts=parts,
    )


# --------------------------------------------------------------------------------------------
# Checks before and right after parsing


def _check_variables(variables: Iterable[str]) -> tuple[str, ...]:
    if isinstance(variables, str):
        raise TypeError("variables must be a collection of names, not one string")
    checked: dict[str, None] = {}
    for name in variables:
        if (
            not isinstance(name, str)
            or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)
            or keyword.iskeyword(name)
            or name.startswith("__")
            or name in _RESERVED_NAMES
        ):
            raise ExpressionError(
                f"{name!r} cannot be a variable name: use letters, digits and '_' (not starting"
                " with a digit or '__'), and not a Python keyword, 'jnp' or 'jax'"
            )
        checked[name] = None
    return tuple(checked)


def _check_characters(text: str) -> None:
    for index, char in enumerate(text):
        if " " <= char <= "~":
            continue
        code = f"U+{ord(char):04X}"
        if char in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029":
            message = (
                f"the expression must be one line: there is a line break at column {index + 1}"
            )
        elif char == "\t":
            message = f"there is a tab at column {index + 1}; use spaces"
        elif char.isascii():
            message = f"there is a control character ({code}) at column {index + 1}"
        else:
            description = unicodedata.name(char, "unnamed character")
            message = (
                f"there is a non-ASCII character ({code} {description}) at column {index + 1};"
                " only plain ASCII letters, digits and symbols are allowed"
            )
        raise ExpressionError(message, index)


def _check_brackets(source: str, shift: int, max_depth: int) -> None:
    """Refuse deeply nested brackets before the parser sees them (they make no tree nodes)."""
    depth = 0
    for index, char in enumerate(source):
        if char in "([{":
            depth += 1
            if depth > max_depth:
                raise ExpressionError(
                    f"brackets are nested more than {max_depth} levels deep; the limit is"
                    f" {max_depth}",
                    index + shift,
                )
        elif char in ")]}":
            depth -= 1


def _parse_syntax(source: str, shift: int) -> ast.Expression:
    try:
        return ast.parse(source, mode="eval")
    except SyntaxError as error:
        problem = error
    except (ValueError, MemoryError, RecursionError, OverflowError):
        raise ExpressionError("the expression is too large or too deeply nested") from None
    statements = _parse_statements(source)
    if len(statements) == 1 and isinstance(statements[0], ast.Expr):
        if isinstance(statements[0].value, ast.Starred):
            raise ExpressionError("'*' unpacking is not allowed in an expression", shift)
    elif statements:
        raise ExpressionError(
            "write a single expression, like x @ weight + bias: statements such as assignments"
            " ('='), imports or several parts separated by ';' are not allowed",
            shift,
        )
    reason = (problem.msg or "invalid syntax").split("\n")[0]
    if "digits" in reason and "limit" in reason:
        raise ExpressionError("a number in the expression has far too many digits") from None
    if problem.offset is None:
        raise ExpressionError(f"syntax error: {reason}") from None
    column = min(max(problem.offset, 1), len(source) + 1) + shift
    raise ExpressionError(f"syntax error at column {column}: {reason}", column - 1) from None


def _parse_statements(source: str) -> list[ast.stmt]:
    """The statements of a text that is not an expression, to explain the error better."""
    try:
        return ast.parse(source, mode="exec").body
    except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
        return []


def _syntax_children(node: ast.AST) -> Iterable[ast.AST]:
    """Children that count toward size and depth (a call's function name counts as nothing)."""
    if isinstance(node, ast.Call):
        yield from node.args
        for item in node.keywords:
            yield item.value
        if not isinstance(node.func, (ast.Name, ast.Attribute)):
            yield node.func
        return
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, _MARKER_NODES):
            yield child


def _check_size(tree: ast.Expression, shift: int, max_nodes: int, max_depth: int) -> int:
    """Count nodes and nesting without recursion, so that hostile trees cannot overflow; the
    number of nodes."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > max_nodes:
            raise ExpressionError(
                f"the expression is too big: it has more than {max_nodes} parts (numbers, names,"
                f" operations, calls); the limit is {max_nodes} (max_expression_nodes,"
                " PLAYGROUND_MAX_EXPRESSION_NODES)"
            )
        if depth > max_depth:
            raise ExpressionError(
                f"the expression is nested more than {max_depth} levels deep (each call, index"
                f" or operator in a chain like a + b + c adds a level); the limit is {max_depth}",
                getattr(node, "col_offset", 0) + shift,
            )
        stack.extend((child, depth + 1) for child in _syntax_children(node))
    return count


_CONSTANT_OPERATORS: dict[type, Callable[[float, float], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}


def _check_constant_parts(
    node: ast.expr, source: str, shift: int, variables: tuple[str, ...]
) -> float | None:
    """Refuse a part made only of numbers whose value leaves the range of numbers.

    Such parts (``9**9**9``, ``1e20 * 1e20``) are never computed in Python by the
    evaluator (they run in float32 and give inf); this check only bounds their size, in float64
    arithmetic, which is as cheap for ``9**9**9`` as for ``2**3``. Answers the part's
    value, or None for a part that is not made only of numbers.
    """
    value: Any = None
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            return None
        value = node.value
    elif isinstance(node, ast.Name):
        if node.id in variables or node.id not in _CONSTANT_VALUES:
            return None
        return _CONSTANT_VALUES[node.id]
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _check_constant_parts(node.operand, source, shift, variables)
        if operand is None:
            return None
        value = -operand if isinstance(node.op, ast.USub) else operand
    elif isinstance(node, ast.BinOp) and type(node.op) in _CONSTANT_OPERATORS:
        left = _check_constant_parts(node.left, source, shift, variables)
        right = _check_constant_parts(node.right, source, shift, variables)
        if left is None or right is None:
            return None
        try:
            value = _CONSTANT_OPERATORS[type(node.op)](float(left), float(right))
        except OverflowError:
            value = float("inf")
        except ZeroDivisionError:
            return None  # 1 / 0: inf in float32, as in NumPy; cheap, not a size problem
    else:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                _check_constant_parts(child, source, shift, variables)
        return None
    if isinstance(value, complex):
        return None  # (-2) ** 0.5: NaN in float32, like sqrt(-2); not a size problem
    if not abs(float(value)) <= MAX_FLOAT_LITERAL:
        segment = ast.get_source_segment(source, node) or "a constant"
        raise ExpressionError(
            f"the constant part '{_short(segment)}' is too large: numbers, and parts made only"
            f" of numbers, can be at most {MAX_FLOAT_LITERAL:g} in size (in float32 it would"
            " be inf)",
            getattr(node, "col_offset", 0) + shift,
        )
    return float(value)


# --------------------------------------------------------------------------------------------
# Building the canonical tree and the evaluator


@dataclass(frozen=True)
class _Built:
    tree: ast.expr  # canonical syntax tree of this part
    run: _Evaluator
    scalar: bool  # at evaluation time this part is a plain Python number


def _jnp_attribute(name: str) -> ast.expr:
    return ast.Attribute(value=ast.Name(id="jnp", ctx=ast.Load()), attr=name, ctx=ast.Load())


def _function_reference(qualified: str) -> ast.expr:
    parts = qualified.split(".")
    node: ast.expr = ast.Name(id=parts[0], ctx=ast.Load())
    for part in parts[1:]:
        node = ast.Attribute(value=node, attr=part, ctx=ast.Load())
    return node


def _int_literal(node: ast.expr) -> int | None:
    """The value of a whole-number literal such as ``3`` or ``-1``, else None."""
    sign = 1
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        if isinstance(node.op, ast.USub):
            sign = -sign
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return sign * node.value
    return None


def _dotted_name(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _suggestion(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


def _words(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _variable(name: str) -> _Evaluator:
    """Look a variable up; Python numbers become JAX scalars so Python never computes with them."""

    def run(env: Mapping[str, Any]) -> Any:
        try:
            value = env[name]
        except KeyError:
            raise ExpressionError(f"no value was given for the variable '{name}'") from None
        if isinstance(value, jax.Array):
            return value
        try:
            return jnp.asarray(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ExpressionError(f"the value of '{name}' is not a number or an array") from exc

    return run


def _constant(value: float) -> _Evaluator:
    return lambda env: value


class _Builder:
    """Walks the parsed tree once, checking each node and building its closure."""

    def __init__(self, source: str, shift: int, variables: tuple[str, ...]) -> None:
        self.source = source
        self.shift = shift
        self.variables = variables
        self.names: set[str] = set()
        self.functions: set[str] = set()

    # ---- helpers

    def error(self, message: str, node: ast.AST | None = None) -> ExpressionError:
        position = None if node is None else getattr(node, "col_offset", None)
        return ExpressionError(message, None if position is None else position + self.shift)

    def segment(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.source, node) or ast.unparse(node)

    def can_use(self) -> str:
        what = list(self.variables)
        start = f"the expression can use {', '.join(what)} and" if what else "the expression can"
        if not what:
            return f"{start} use numbers and functions like {_FUNCTION_EXAMPLES}"
        return f"{start} functions like {_FUNCTION_EXAMPLES}"

    def guarded(self, node: ast.AST, compute: _Evaluator) -> _Evaluator:
        """Turn JAX's shape and type errors at evaluation time into ExpressionErrors."""
        snippet = _short(self.segment(node))
        position = getattr(node, "col_offset", 0) + self.shift

        def run(env: Mapping[str, Any]) -> Any:
            try:
                return compute(env)
            except ExpressionError:
                raise
            except (TypeError, ValueError, IndexError, ZeroDivisionError, OverflowError) as exc:
                detail = _short(str(exc).strip().split("\n")[0], 300)
                raise ExpressionError(
                    f"cannot compute '{snippet}' (column {position + 1}): {detail}", position
                ) from exc

        return run

    def as_array(self, built: _Built, node: ast.AST) -> _Built:
        """Make a plain number a float32 array, so that Python never does the arithmetic."""
        if not built.scalar:
            return built
        self.functions.add("jnp.float32")
        tree = ast.Call(func=_jnp_attribute("float32"), args=[built.tree], keywords=[])
        inner = built.run
        return _Built(tree, self.guarded(node, lambda env: jnp.float32(inner(env))), False)

    # ---- expressions

    def top(self, node: ast.expr) -> _Built:
        return self.as_array(self.value(node), node)

    def value(self, node: ast.expr) -> _Built:
        if isinstance(node, ast.Constant):
            return self.number(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Attribute):
            return self.attribute(node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.Compare):
            raise self.comparison_error(node)
        raise self.error(
            _FORBIDDEN_NODES.get(type(node), f"'{_short(self.segment(node))}' is not allowed"),
            node,
        )

    def number(self, node: ast.Constant) -> _Built:
        value = node.value
        if isinstance(value, bool) or value is None:
            raise self.error(
                f"{value} is only allowed in options like keepdims=True, axis=None or as a new"
                " axis in x[None]",
                node,
            )
        if value is Ellipsis:
            raise self.error("'...' is only allowed inside [...], like x[..., 0]", node)
        if isinstance(value, (str, bytes)):
            kind = "strings" if isinstance(value, str) else "bytes"
            raise self.error(f"{kind} are not allowed in an expression", node)
        if isinstance(value, complex):
            raise self.error("complex numbers are not allowed in an expression", node)
        if isinstance(value, int):
            if abs(value) > MAX_INT_LITERAL:
                raise self.error(
                    f"the number {_short(str(value), 30)} is too large: whole numbers can be at"
                    f" most {MAX_INT_LITERAL} (write 1e12 for a large float)",
                    node,
                )
            value = float(value)
        if not isinstance(value, float):
            raise self.error(f"'{_short(self.segment(node))}' is not allowed", node)
        if not abs(value) <= MAX_FLOAT_LITERAL:
            raise self.error(
                f"the number {self.segment(node)} is too large: numbers can be at most"
                f" {MAX_FLOAT_LITERAL:g} in size",
                node,
            )
        return _Built(ast.Constant(value=value), _constant(value), True)

    def name(self, node: ast.Name) -> _Built:
        name = node.id
        if name.startswith("__"):
            raise self.error(f"names starting with '__' are not allowed ('{name}')", node)
        if name in self.variables:
            self.names.add(name)
            return _Built(ast.Name(id=name, ctx=ast.Load()), _variable(name), False)
        if name in _CONSTANT_VALUES:
            return _Built(_jnp_attribute(name), _constant(_CONSTANT_VALUES[name]), True)
        if name in ALLOWED_FUNCTIONS:
            raise self.error(f"'{name}' is a function: call it on a value, like {name}(x)", node)
        raise self.unknown_name(name, node)

    def unknown_name(self, name: str, node: ast.AST) -> ExpressionError:
        if name in _RESERVED_NAMES:
            return self.error(
                f"'{name}' can only be used to call a function, like jnp.sin(x)", node
            )
        if name in _OTHER_LIBRARIES:
            return self.error(
                f"'{name}' is not available: call functions bare or with jnp., like sin(x) or"
                " jnp.sin(x)",
                node,
            )
        hint = _suggestion(name, [*self.variables, *ALLOWED_CONSTANTS])
        return self.error(f"unknown name '{name}'{hint}: {self.can_use()}", node)

    def attribute(self, node: ast.Attribute) -> _Built:
        if node.attr.startswith("_"):
            raise self.error(f"attributes starting with '_' are not allowed ('.{node.attr}')", node)
        if node.attr == "T":
            inner = self.as_array(self.value(node.value), node.value)
            tree = ast.Attribute(value=inner.tree, attr="T", ctx=ast.Load())
            run = inner.run
            return _Built(tree, self.guarded(node, lambda env: run(env).T), False)
        dotted = _dotted_name(node)
        if dotted in ("jnp.pi", "jnp.e"):
            constant = dotted.split(".")[1]
            return _Built(_jnp_attribute(constant), _constant(_CONSTANT_VALUES[constant]), True)
        if dotted is not None:
            root = dotted.split(".")[0]
            if root in _RESERVED_NAMES:
                self.resolve_function(node)  # raises the most helpful error for a wrong name
                raise self.error(f"'{dotted}' is a function: call it, like {dotted}(x)", node)
            if root not in self.variables:
                raise self.unknown_name(root, node)
        raise self.error(
            f"attributes are not allowed except .T (transpose): '.{node.attr}' in"
            f" '{_short(self.segment(node))}'",
            node,
        )

    def unary(self, node: ast.UnaryOp) -> _Built:
        if isinstance(node.op, ast.Not):
            raise self.error("'not' is not allowed in an expression", node)
        if isinstance(node.op, ast.Invert):
            raise self.error("'~' is not allowed in an expression", node)
        inner = self.value(node.operand)
        compute = operator.neg if isinstance(node.op, ast.USub) else operator.pos
        tree = ast.UnaryOp(op=type(node.op)(), operand=inner.tree)
        run = inner.run
        if inner.scalar:  # negating a Python float is safe and keeps it a plain number
            return _Built(tree, lambda env: compute(run(env)), True)
        return _Built(tree, self.guarded(node, lambda env: compute(run(env))), False)

    def binary(self, node: ast.BinOp) -> _Built:
        compute = _BINARY_OPERATORS.get(type(node.op))
        if compute is None:
            symbol = _FORBIDDEN_OPERATOR_SYMBOLS.get(type(node.op), "this operator")
            hint = "; use floor(a / b)" if symbol == "//" else ""
            raise self.error(
                f"'{symbol}' is not allowed in an expression (operators: + - * / ** @ %){hint}",
                node,
            )
        left = self.value(node.left)
        right = self.value(node.right)
        if isinstance(node.op, ast.MatMult) and (left.scalar or right.scalar):
            raise self.error("'@' needs arrays on both sides, not a plain number", node)
        if left.scalar and right.scalar:
            left = self.as_array(left, node.left)
        tree = ast.BinOp(left=left.tree, op=type(node.op)(), right=right.tree)
        run_left, run_right = left.run, right.run
        run = self.guarded(node, lambda env: compute(run_left(env), run_right(env)))
        return _Built(tree, run, False)

    def comparison_error(self, node: ast.Compare) -> ExpressionError:
        for op in node.ops:
            if type(op) not in _COMPARISONS:
                symbol = _FORBIDDEN_OPERATOR_SYMBOLS.get(type(op), "this comparison")
                return self.error(
                    f"'{symbol}' is not allowed; comparisons can only use < <= > >= as the"
                    " condition of where(...), like where(x > 0, x, 0)",
                    node,
                )
        return self.error(
            "comparisons like x > 0 are only allowed as the condition of where(...), like"
            " where(x > 0, x, 0)",
            node,
        )

    def comparison(self, node: ast.expr) -> _Built:
        if not isinstance(node, ast.Compare):
            return self.value(node)
        if len(node.ops) != 1 or type(node.ops[0]) not in _COMPARISONS:
            if all(type(op) in _COMPARISONS for op in node.ops):
                raise self.error(
                    "chained comparisons like a < x < b are not allowed; compare two values",
                    node,
                )
            raise self.comparison_error(node)
        compute = _COMPARISONS[type(node.ops[0])]
        left = self.value(node.left)
        right = self.value(node.comparators[0])
        tree = ast.Compare(left=left.tree, ops=[type(node.ops[0])()], comparators=[right.tree])
        run_left, run_right = left.run, right.run
        run = self.guarded(node, lambda env: compute(run_left(env), run_right(env)))
        return _Built(tree, run, left.scalar and right.scalar)

    # ---- indexing

    def subscript(self, node: ast.Subscript) -> _Built:
        inner = self.as_array(self.value(node.value), node.value)
        index, index_tree = self.index(node.slice)
        tree = ast.Subscript(value=inner.tree, slice=index_tree, ctx=ast.Load())
        run = inner.run
        return _Built(tree, self.guarded(node, lambda env: run(env)[index]), False)

    def index(self, node: ast.expr) -> tuple[Any, ast.expr]:
        if not isinstance(node, ast.Tuple):
            return self.index_part(node)
        parts = [self.index_part(item) for item in node.elts]
        if sum(1 for value, _ in parts if value is Ellipsis) > 1:
            raise self.error("an index can use '...' only once", node)
        values = tuple(value for value, _ in parts)
        return values, ast.Tuple(elts=[tree for _, tree in parts], ctx=ast.Load())

    def index_part(self, node: ast.expr) -> tuple[Any, ast.expr]:
        if isinstance(node, ast.Slice):
            bounds = [self.slice_bound(part) for part in (node.lower, node.upper, node.step)]
            if bounds[2] == 0:
                raise self.error("a slice step cannot be zero", node)
            trees = [None if value is None else ast.Constant(value=value) for value in bounds]
            return slice(*bounds), ast.Slice(lower=trees[0], upper=trees[1], step=trees[2])
        if isinstance(node, ast.Constant) and (node.value is Ellipsis or node.value is None):
            return node.value, ast.Constant(value=node.value)
        value = _int_literal(node)
        if value is None:
            raise self.error(
                "indices must be whole numbers like x[0] or x[-1], slices like x[1:3] or"
                f" x[:, ::2], '...' or None; '{_short(self.segment(node))}' is not allowed",
                node,
            )
        self.check_index(value, node)
        return value, ast.Constant(value=value)

    def slice_bound(self, node: ast.expr | None) -> int | None:
        if node is None:
            return None
        value = _int_literal(node)
        if value is None:
            raise self.error(
                f"slice bounds must be whole numbers, like x[1:3]; '{self.segment(node)}' is not",
                node,
            )
        self.check_index(value, node)
        return value

    def check_index(self, value: int, node: ast.AST) -> None:
        if abs(value) > MAX_INT_LITERAL:
            raise self.error(f"the index {_short(str(value), 30)} is too large", node)

    # ---- calls

    def resolve_function(self, func: ast.expr) -> _Function:
        if isinstance(func, ast.Name):
            return self.resolve_bare(func)
        dotted = _dotted_name(func)
        if dotted is None:
            if isinstance(func, ast.Attribute):
                raise self.error(
                    f"attributes are not allowed except .T (transpose): '.{func.attr}' in"
                    f" '{_short(self.segment(func))}'",
                    func,
                )
            raise self.error(
                f"only functions can be called, like sin(x); '{_short(self.segment(func))}' is"
                " not a function",
                func,
            )
        parts = dotted.split(".")
        if any(part.startswith("_") for part in parts):
            raise self.error(f"names starting with '_' are not allowed ('{dotted}')", func)
        last = parts[-1]
        if parts[0] == "jnp" and len(parts) == 2 and last in _JNP_NAMES:
            return _REGISTRY[dotted]
        if parts[:2] == ["jax", "nn"] and len(parts) == 3 and last in _NN_NAMES:
            return _REGISTRY[dotted]
        if parts[0] in _RESERVED_NAMES:
            raise self.error(self.wrong_prefix_message(dotted), func)
        if parts[0] in self.variables:
            if len(parts) == 2 and last in ALLOWED_FUNCTIONS:
                raise self.error(
                    f"methods are not allowed: write {last}({parts[0]}) instead of"
                    f" {parts[0]}.{last}(...)",
                    func,
                )
            raise self.error(
                f"attributes are not allowed except .T (transpose): '.{parts[1]}' in '{dotted}'",
                func,
            )
        raise self.unknown_name(parts[0], func)

    def wrong_prefix_message(self, dotted: str) -> str:
        last = dotted.rsplit(".", 1)[-1]
        if last in ALLOWED_FUNCTIONS:
            qualified = ALLOWED_FUNCTIONS[last]
            return f"'{dotted}' is not allowed: write {qualified}(...) or {last}(...)"
        if dotted in ("jnp.pi", "jnp.e"):
            return f"'{dotted}' is a number, not a function"
        hint = _suggestion(last, ALLOWED_FUNCTIONS, 0.75)
        return (
            f"'{dotted}' is not an allowed function{hint}: the expression can call jnp.<name> or"
            f" jax.nn.<name> for functions like {_FUNCTION_EXAMPLES}"
        )

    def resolve_bare(self, func: ast.Name) -> _Function:
        name = func.id
        if name.startswith("__"):
            raise self.error(f"names starting with '__' are not allowed ('{name}')", func)
        if name in ALLOWED_FUNCTIONS:
            return _REGISTRY[ALLOWED_FUNCTIONS[name]]
        if name in self.variables:
            raise self.error(
                f"'{name}' is a variable, not a function: only functions like sin(...) can be"
                " called",
                func,
            )
        if name in _CONSTANT_VALUES:
            raise self.error(f"'{name}' is a number, not a function", func)
        if name in _RESERVED_NAMES:
            raise self.error(
                f"'{name}' is a module: call one of its functions, like jnp.sin(x)", func
            )
        if name in _OTHER_LIBRARIES:
            raise self.unknown_name(name, func)
        hint = _suggestion(name, ALLOWED_FUNCTIONS, 0.75)
        raise self.error(
            f"'{name}' is not an allowed function{hint}: the expression can call functions like"
            f" {_FUNCTION_EXAMPLES}",
            func,
        )

    def call(self, node: ast.Call) -> _Built:
        spec = self.resolve_function(node.func)
        bound = self.bind(spec, node)
        positional_trees: list[ast.expr] = []
        positional_runs: list[_Evaluator] = []
        keyword_trees: list[ast.keyword] = []
        keyword_runs: dict[str, _Evaluator] = {}
        statics: dict[str, Any] = {}
        still_positional = True
        for param in spec.params:
            argument = bound.get(param.name)
            if argument is None:
                still_positional = False
                continue
            if param.kind in _ARRAY_KINDS:
                built = self.argument(param, argument)
                if still_positional:
                    positional_trees.append(built.tree)
                    positional_runs.append(built.run)
                else:
                    keyword_trees.append(ast.keyword(arg=param.name, value=built.tree))
                    keyword_runs[param.name] = built.run
            else:
                value, tree = self.static(spec, param, argument)
                keyword_trees.append(ast.keyword(arg=param.name, value=tree))
                statics[param.name] = value
                still_positional = False
        self.functions.add(spec.qualified)
        tree = ast.Call(
            func=_function_reference(spec.qualified), args=positional_trees, keywords=keyword_trees
        )
        impl = spec.impl

        def compute(env: Mapping[str, Any]) -> Any:
            args = [run(env) for run in positional_runs]
            kwargs = {name: run(env) for name, run in keyword_runs.items()}
            return impl(*args, **kwargs, **statics)

        return _Built(tree, self.guarded(node, compute), False)

    def bind(self, spec: _Function, node: ast.Call) -> dict[str, ast.expr]:
        """Match the call's arguments to the function's parameters."""
        usage = spec.usage()
        for argument in node.args:
            if isinstance(argument, ast.Starred):
                raise self.error("'*' unpacking is not allowed in an expression", argument)
        positional_params = [param for param in spec.params if param.positional]
        if len(node.args) > len(positional_params):
            allowed = len(positional_params)
            raise self.error(
                f"{spec.bare}() takes at most {allowed} value{'s' if allowed > 1 else ''} by"
                f" position, got {len(node.args)}; usage: {usage}",
                node,
            )
        bound = {param.name: arg for param, arg in zip(positional_params, node.args, strict=False)}
        for item in node.keywords:
            if item.arg is None:
                raise self.error("'**' unpacking is not allowed in an expression", item.value)
            param = spec.param(item.arg)
            if param is None:
                names = [p.name for p in spec.params if p.keyword]
                hint = _suggestion(item.arg, names)
                raise self.error(
                    f"{spec.bare}() has no option '{item.arg}'{hint}; usage: {usage}", item.value
                )
            if param.name in bound:
                raise self.error(f"{spec.bare}() got '{param.name}' twice", item.value)
            bound[param.name] = item.value
        missing = [p.name for p in spec.params if p.required and p.name not in bound]
        if missing:
            raise self.error(
                f"{spec.bare}() is missing {_words([repr(m) for m in missing])}; usage: {usage}",
                node,
            )
        return bound

    def argument(self, param: _Param, node: ast.expr) -> _Built:
        if param.kind == "condition":
            return self.comparison(node)
        if param.kind == "array":
            return self.value(node)
        if param.kind == "labels":
            return self.labels(node)
        if not isinstance(node, (ast.Tuple, ast.List)):
            raise self.error("give the arrays as a tuple, like concatenate((x, y), axis=0)", node)
        if not node.elts or len(node.elts) > MAX_SEQUENCE_LENGTH:
            raise self.error(f"give between 1 and {MAX_SEQUENCE_LENGTH} arrays", node)
        items = [self.value(item) for item in node.elts]
        runs = [item.run for item in items]
        tree = ast.Tuple(elts=[item.tree for item in items], ctx=ast.Load())
        return _Built(tree, lambda env: tuple(run(env) for run in runs), False)

    def labels(self, node: ast.expr) -> _Built:
        """Class labels for one_hot: the value cast to whole numbers with jnp.int32."""
        if (
            isinstance(node, ast.Call)
            and _dotted_name(node.func) in ("jnp.int32", "int32")
            and len(node.args) == 1
            and not node.keywords
        ):
            node = node.args[0]
        inner = self.value(node)
        self.functions.add("jnp.int32")
        tree = ast.Call(func=_jnp_attribute("int32"), args=[inner.tree], keywords=[])
        run = inner.run
        return _Built(tree, self.guarded(node, lambda env: jnp.int32(run(env))), False)

    # ---- static options

    def static(self, spec: _Function, param: _Param, node: ast.expr) -> tuple[Any, ast.expr]:
        """Parse an option written as a literal: a whole number, a tuple of them, a bool..."""
        kind = param.kind
        if kind == "bool":
            if isinstance(node, ast.Constant) and isinstance(node.value, bool):
                return node.value, ast.Constant(value=node.value)
            raise self.error(f"{param.name} must be True or False", node)
        if isinstance(node, ast.Constant) and node.value is None and kind in ("axis", "shape_axes"):
            if param.required:
                raise self.error(f"{spec.bare}() needs a whole number for {param.name}", node)
            return None, ast.Constant(value=None)
        if kind == "int_axis" and isinstance(node, ast.Constant) and node.value is None:
            if not param.required:
                return None, ast.Constant(value=None)
        if kind in ("axis", "shape_axes", "shape") and isinstance(node, (ast.Tuple, ast.List)):
            if len(node.elts) > MAX_SEQUENCE_LENGTH:
                raise self.error(f"{param.name} has too many entries", node)
            values = [self.static_int(spec, param, item) for item in node.elts]
            tree = ast.Tuple(elts=[ast.Constant(value=v) for v in values], ctx=ast.Load())
            return tuple(values), tree
        if kind == "shape_axes":
            raise self.error("axes must be a tuple of whole numbers, like (1, 0), or None", node)
        value = self.static_int(spec, param, node)
        return value, ast.Constant(value=value)

    def static_int(self, spec: _Function, param: _Param, node: ast.expr) -> int:
        value = _int_literal(node)
        kind = param.kind
        if kind in ("axis", "int_axis", "shape_axes"):
            low, high = -MAX_AXIS, MAX_AXIS - 1
            what = "a whole number such as 0 or -1"
            if kind == "axis":
                what += ", a tuple of them such as (0, 1), or None"
        elif kind == "shape":
            low, high = -1, MAX_INT_LITERAL
            what = "a whole number or a tuple of them, like (2, 3) (one entry may be -1)"
        elif kind == "num_classes":
            low, high = 1, MAX_NUM_CLASSES
            what = f"a whole number from 1 to {MAX_NUM_CLASSES}"
        else:  # ddof
            low, high = 0, MAX_DDOF
            what = f"a whole number from 0 to {MAX_DDOF}"
        if value is None or not low <= value <= high:
            hint = ""
            if spec.bare in ("max", "min") and param.name == "axis":
                hint = f"; to compare two arrays element by element use {spec.bare}imum(a, b)"
            got = _short(self.segment(node))
            raise self.error(f"{param.name} must be {what}; got '{got}'{hint}", node)
        return value
