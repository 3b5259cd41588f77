"""The mutation engine: minimal text edits of a correct body (off-by-one, wrong operator, missing case, wrong
initial value, wrong return value) that make plausible incorrect solutions.

An edit replaces a span of the body's text, so a mutant keeps the formatting of the code it came from: style never
tells a correct solution from an incorrect one.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wmtp.data.synthetic.spec import Spec

MUTATION_KINDS = ("off_by_one", "wrong_operator", "missing_case", "wrong_init", "wrong_return")

_BINOP_SWAP = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "+"), ast.FloorDiv: ("//", "/"),
               ast.Mod: ("%", "//"), ast.Pow: ("**", "*")}
_BOUNDARY = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">")}
_FLIP = {ast.Eq: ("==", "!="), ast.NotEq: ("!=", "=="), ast.In: ("in", "not in"), ast.NotIn: ("not in", "in"),
         ast.Lt: ("<", ">"), ast.Gt: (">", "<"), ast.LtE: ("<=", ">="), ast.GtE: (">=", "<="),
         ast.Is: ("is", "is not"), ast.IsNot: ("is not", "is")}
_BUILTIN_SWAP = {"min": "max", "max": "min", "any": "all", "all": "any"}
_DROPPABLE_CALLS = ("abs", "reversed")  # forgetting them is a classic missing case (negatives, order)
_ATOMIC = (ast.Name, ast.Constant, ast.Call, ast.Attribute, ast.Subscript, ast.List, ast.Tuple)


@dataclass(frozen=True)
class _Edit:
    """Replace body[start:end] by text."""

    kind: str
    start: int
    end: int
    text: str


def _int_of(node: ast.AST) -> int | None:
    """The value of an int literal (including a negated one), else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _int_of(node.operand)
        return None if inner is None else -inner
    return None


class _Source:
    """A body's text and its AST, with node spans as character offsets (the templates are ASCII)."""

    def __init__(self, body: str):
        self.text = body
        self.tree = ast.parse(body)
        self.line_starts = [0] + [i + 1 for i, ch in enumerate(body) if ch == "\n"]
        self.parents = {id(c): n for n in ast.walk(self.tree) for c in ast.iter_child_nodes(n)}

    def pos(self, lineno: int, col: int) -> int:
        return self.line_starts[lineno - 1] + col

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.pos(node.lineno, node.col_offset), self.pos(node.end_lineno, node.end_col_offset)

    def seg(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self.text[start:end]

    def lines(self, first: int, last: int) -> tuple[int, int]:
        """Character span of whole lines first..last (1-based, inclusive, with the newline)."""
        end = self.line_starts[last] if last < len(self.line_starts) else len(self.text)
        return self.line_starts[first - 1], end

    def shifted(self, node: ast.expr, delta: int) -> str:
        """Text of `node + delta`, folded into an int literal or a trailing `± c` when there is one."""
        value = _int_of(node)
        if value is not None:
            return str(value + delta)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)) and _int_of(node.right) is not None:
            c = _int_of(node.right) * (1 if isinstance(node.op, ast.Add) else -1) + delta
            left = self.seg(node.left)
            return left if c == 0 else f"{left} + {c}" if c > 0 else f"{left} - {-c}"
        text = self.seg(node) if isinstance(node, (*_ATOMIC, ast.BinOp)) else f"({self.seg(node)})"
        return f"{text} + {delta}" if delta > 0 else f"{text} - {-delta}"


def _edits(body: str, params: list[str]) -> list[_Edit]:
    """Every mutation the body admits, in a deterministic order. Some may not parse; the caller checks."""
    src = _Source(body)
    edits: list[_Edit] = []

    def add(kind: str, node_or_span: ast.AST | tuple[int, int], text: str) -> None:
        start, end = node_or_span if isinstance(node_or_span, tuple) else src.span(node_or_span)
        edits.append(_Edit(kind, start, end, text))

    def operator(kind: str, left: ast.AST, right: ast.AST, old: str, new: str) -> None:
        # Between two operands there is only whitespace, parentheses and the operator itself.
        start, end = src.span(left)[1], src.span(right)[0]
        add(kind, (start, end), src.text[start:end].replace(old, new, 1))

    def shift_both(kind: str, node: ast.expr, skip_zero: bool = False) -> None:
        for delta in (1, -1):
            text = src.shifted(node, delta)
            if not (skip_zero and text == "0"):
                add(kind, node, text)

    local_names = sorted(set(params) | {
        n.id for node in ast.walk(src.tree)
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.For))
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        for n in ast.walk(t) if isinstance(n, ast.Name) and n.id != "_"
    })

    for node in ast.walk(src.tree):
        if isinstance(node, ast.BinOp):
            if type(node.op) in _BINOP_SWAP:
                operator("wrong_operator", node.left, node.right, *_BINOP_SWAP[type(node.op)])
            for side in (node.left, node.right):
                if _int_of(side) is not None:
                    shift_both("off_by_one", side, skip_zero=True)
        elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP_SWAP:
            old, new = _BINOP_SWAP[type(node.op)]
            operator("wrong_operator", node.target, node.value, old + "=", new + "=")
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):
                if type(op) in _BOUNDARY:
                    operator("off_by_one", operands[i], operands[i + 1], *_BOUNDARY[type(op)])
                if type(op) in _FLIP:
                    operator("wrong_operator", operands[i], operands[i + 1], *_FLIP[type(op)])
            for side in operands:
                if _int_of(side) is not None:
                    shift_both("off_by_one", side)
        elif isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name == "range":
                for arg in node.args[:2] if len(node.args) > 1 else node.args:  # start and stop, not step
                    shift_both("off_by_one", arg)
            else:  # max(-3, x), xs.insert(0, x), xs.pop(0)
                for arg in node.args:
                    if _int_of(arg) is not None:
                        shift_both("off_by_one", arg)
            if name in _BUILTIN_SWAP:
                add("wrong_operator", node.func, _BUILTIN_SWAP[name])
            if name in _DROPPABLE_CALLS and len(node.args) == 1:
                arg, parent = node.args[0], src.parents.get(id(node))
                bare = isinstance(arg, _ATOMIC) or not isinstance(parent, (ast.BinOp, ast.UnaryOp, ast.Attribute))
                add("missing_case", node, src.seg(arg) if bare else f"({src.seg(arg)})")
        elif isinstance(node, ast.Subscript):
            index = node.slice
            if isinstance(index, ast.Slice):
                if index.step is not None and _int_of(index.step) == -1 and index.lower is index.upper is None:
                    add("missing_case", node, src.seg(node.value))  # forgot to reverse
                for bound in (index.lower, index.upper):
                    if bound is not None:
                        shift_both("off_by_one", bound)
            else:
                shift_both("off_by_one", index)
        elif isinstance(node, ast.BoolOp):
            old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
            for left, right in zip(node.values, node.values[1:]):
                operator("wrong_operator", left, right, old, new)
            for i in range(len(node.values)):  # drop one condition together with its connective
                if i == 0:
                    add("missing_case", (src.span(node.values[0])[0], src.span(node.values[1])[0]), "")
                else:
                    add("missing_case", (src.span(node.values[i - 1])[1], src.span(node.values[i])[1]), "")
        elif isinstance(node, ast.IfExp):
            add("missing_case", node, src.seg(node.body))
            add("missing_case", node, src.seg(node.orelse))
        elif isinstance(node, ast.comprehension):
            previous = node.iter
            for cond in node.ifs:  # drop a filter
                add("missing_case", (src.span(previous)[1], src.span(cond)[1]), "")
                previous = cond
        elif isinstance(node, ast.If):
            _branch_edits(src, node, add)
        elif isinstance(node, ast.Assign):
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            for value in values:
                v = _int_of(value)
                if isinstance(value, ast.Constant) and type(value.value) is bool:
                    add("wrong_init", value, str(not value.value))
                elif v is not None:
                    add("wrong_init", value, str({0: 1, 1: 0}.get(v, v + 1)))
                elif isinstance(value, ast.Subscript) and _int_of(value.slice) is not None:
                    add("wrong_init", value, "0")
        elif isinstance(node, ast.Return) and node.value is not None:
            value = node.value
            if isinstance(value, ast.Name):
                for other in local_names:
                    if other != value.id:
                        add("wrong_return", value, other)
            elif isinstance(value, ast.Constant) and type(value.value) is bool:
                add("wrong_return", value, str(not value.value))
            elif _int_of(value) is not None:
                shift_both("wrong_return", value)
    return edits


def _branch_edits(src: _Source, node: ast.If, add: Callable[[str, tuple[int, int], str], None]) -> None:
    """Missing-case edits of an if statement, made on whole lines so the rest keeps its layout."""
    is_elif = src.text[src.line_starts[node.lineno - 1]:].lstrip().startswith("elif")
    if is_elif:  # drop this branch: the next elif/else then belongs to the previous branch
        add("missing_case", src.lines(node.lineno, node.body[-1].end_lineno), "")
        return
    if not node.orelse:  # drop a guard or a whole case
        add("missing_case", src.lines(node.lineno, node.end_lineno), "")
        return

    def dedented(first: int, last: int) -> str:
        start, end = src.lines(first, last)
        return "".join(line[4:] for line in src.text[start:end].splitlines(keepends=True))

    whole = src.lines(node.lineno, node.end_lineno)
    add("missing_case", whole, dedented(node.body[0].lineno, node.body[-1].end_lineno))  # drop the else
    first_else = node.orelse[0]
    if src.text[src.line_starts[first_else.lineno - 1]:].lstrip().startswith("elif"):
        # drop the if-branch: the elif becomes the if
        indent = src.text[whole[0]:src.pos(node.lineno, node.col_offset)]
        elif_at = src.pos(first_else.lineno, 0) + len(indent)
        add("missing_case", (whole[0], elif_at + len("elif")), indent + "if")
    else:
        add("missing_case", whole, dedented(first_else.lineno, node.orelse[-1].end_lineno))


def mutants(spec: Spec, bodies: Sequence[str], n: int, rng: random.Random) -> list[tuple[str, str]]:
    """Up to n distinct mutants of `bodies` (some of the spec's correct bodies), each with the body it was made
    from: (mutant, source) pairs. Pick a body, then a mutation kind, then a site."""
    params = [p.split(":")[0].strip() for p in spec.params.split(",")]
    seen = {_ast_key(body) for body in spec.bodies}
    out: list[tuple[str, str]] = []
    for _ in range(20 * n):
        if len(out) == n:
            break
        body = rng.choice(bodies)
        edits = _edits(body, params)
        if not edits:
            continue
        kind = rng.choice([k for k in MUTATION_KINDS if any(e.kind == k for e in edits)])
        edit = rng.choice([e for e in edits if e.kind == kind])
        mutant = (body[: edit.start] + edit.text + body[edit.end:]).rstrip()  # no trailing blank lines
        try:
            compile(spec.source(mutant), "<mutant>", "exec")
        except SyntaxError:
            continue
        key = _ast_key(mutant)
        if key not in seen:  # a mutant equal to a correct body or to another mutant is no new completion
            seen.add(key)
            out.append((mutant, body))
    return out


def _ast_key(body: str) -> str:
    """A body up to formatting: two bodies with the same key are the same code."""
    return ast.dump(ast.parse(body))
