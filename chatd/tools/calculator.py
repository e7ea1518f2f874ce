"""A safe calculator: arithmetic over an AST whitelist. No `eval`, no names but math's, no attributes.

Refuses with a clear message: attribute access, imports and any call outside the whitelist, huge
exponents and numbers (so `9**9**9` cannot hang the daemon), and expressions over 1,000 characters.
"""

from __future__ import annotations

import ast
import math
import operator

MAX_LENGTH = 1_000
MAX_INT_BITS = 4_096
MAX_EXPONENT = 10_000

_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {
    "abs": abs, "round": round, "min": min, "max": max, "sqrt": math.sqrt, "exp": math.exp,
    "log": math.log, "log10": math.log10, "log2": math.log2, "sin": math.sin, "cos": math.cos,
    "tan": math.tan, "asin": math.asin, "acos": math.acos, "atan": math.atan, "floor": math.floor,
    "ceil": math.ceil, "factorial": math.factorial, "hypot": math.hypot, "degrees": math.degrees,
    "radians": math.radians,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}


class CalculatorError(ValueError):
    pass


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression safely.

    Args:
        expression: Arithmetic with + - * / // % **, parentheses, pi, e, and functions such as sqrt,
            log, sin, cos, round, min, max. Example: "2 * (3 + 4) ** 2".
    """
    if len(expression) > MAX_LENGTH:
        raise CalculatorError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"not an arithmetic expression: {exc.msg}") from None
    value = _eval(tree.body)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value)


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant):
        if type(node.value) in (int, float):
            return _check(node.value)
        raise CalculatorError(f"only numbers are allowed, not {type(node.value).__name__}")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculatorError(f"exponent {right} is too large (limit {MAX_EXPONENT})")
        if isinstance(node.op, ast.Pow) and isinstance(left, int) and isinstance(right, int) and right > 0 \
                and left not in (0, 1, -1) and abs(left).bit_length() * right > MAX_INT_BITS:
            raise CalculatorError(f"result would have more than {MAX_INT_BITS} bits")
        if isinstance(node.op, ast.Mult) and isinstance(left, int) and isinstance(right, int) \
                and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
            raise CalculatorError(f"result would have more than {MAX_INT_BITS} bits")
        try:
            return _check(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise CalculatorError("division by zero") from None
        except OverflowError:
            raise CalculatorError("result is too large") from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise CalculatorError(f"unknown name {node.id!r}; allowed: {', '.join(sorted(_CONSTANTS))}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            what = node.func.id if isinstance(node.func, ast.Name) else "that call"
            raise CalculatorError(f"function {what!r} is not allowed; allowed: {', '.join(sorted(_FUNCTIONS))}")
        if node.keywords:
            raise CalculatorError("keyword arguments are not allowed")
        args = [_eval(a) for a in node.args]
        if node.func.id == "factorial" and args and args[0] > 1000:
            raise CalculatorError("factorial argument too large (limit 1000)")
        try:
            return _check(_FUNCTIONS[node.func.id](*args))
        except (ValueError, TypeError, OverflowError) as exc:
            raise CalculatorError(f"{node.func.id}: {exc}") from None
    if isinstance(node, ast.Attribute):
        raise CalculatorError("attribute access is not allowed")
    raise CalculatorError(f"{type(node).__name__} is not allowed in an arithmetic expression")


def _check(value: int | float) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CalculatorError("only numbers are allowed")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalculatorError(f"result has more than {MAX_INT_BITS} bits")
    return value
