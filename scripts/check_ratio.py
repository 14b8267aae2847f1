"""How much of the library's function bodies is argument checking (issue 14: at most 10%).

    python scripts/check_ratio.py            # per module, then the total; the last line is JSON

Every ``.py`` under ``lecture_lib/`` is read with :mod:`ast` (nothing is imported), except the
validation module ``lecture_lib/_validate.py`` (checking is its job) and the figure layer
``lecture_lib/viz/``.

* **Body lines**: the lines spanned by the statements inside function bodies (methods and nested
  functions included, each line counted once), without docstrings, blank lines and comment-only lines.
* **Check lines**: the body lines of *check statements*: a ``raise``; an expression, assignment or
  ``return`` that calls a function whose name starts with ``check_`` or ``_check``; an ``if`` whose
  body holds only check statements (``if bad: raise ...``), with the lines of its condition.

The ratio is check lines over body lines, per module and in total.
"""
from __future__ import annotations

import ast
import io
import json
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "lecture_lib"
EXCLUDED = ("_validate.py", "viz")   # relative to lecture_lib/: a file, or a folder and everything under it
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def modules(library: Path = LIBRARY) -> list[Path]:
    """The library's ``.py`` files that the ratio counts, sorted."""
    out = []
    for path in sorted(library.rglob("*.py")):
        rel = path.relative_to(library).as_posix()
        if any(rel == ex or rel.startswith(ex + "/") for ex in EXCLUDED):
            continue
        out.append(path)
    return out


def _lines(node: ast.AST) -> set[int]:
    return set(range(node.lineno, node.end_lineno + 1))


def _code_lines(source: str) -> set[int]:
    """Lines that hold a token other than a comment or a line break (blank and comment-only lines are not code)."""
    lines = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def _is_docstring(stmt: ast.stmt) -> bool:
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str))


def _calls_a_check(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            f = sub.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name.startswith(("check_", "_check")):
                return True
    return False


def _is_check(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Raise):
        return True
    if isinstance(stmt, (ast.Expr, ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Return)):
        return stmt.value is not None and _calls_a_check(stmt.value)
    if isinstance(stmt, ast.If):
        return all(_is_check(s) for s in stmt.body)
    return False


def _check_lines(stmts: list[ast.stmt]) -> set[int]:
    """The lines of the check statements among ``stmts`` and inside their blocks."""
    lines: set[int] = set()
    for stmt in stmts:
        if isinstance(stmt, ast.If) and all(_is_check(s) for s in stmt.body):
            lines |= set(range(stmt.lineno, stmt.body[-1].end_lineno + 1))     # the condition and its raise
            lines |= _check_lines(stmt.orelse)                                   # an elif/else is judged alone
        elif _is_check(stmt):
            lines |= _lines(stmt)
        else:
            for field in ("body", "orelse", "finalbody"):
                lines |= _check_lines(getattr(stmt, field, []))
            for clause in getattr(stmt, "handlers", []) + getattr(stmt, "cases", []):   # except / case blocks
                lines |= _check_lines(clause.body)
    return lines


def count(source: str) -> tuple[int, int]:
    """``(check_lines, body_lines)`` of one module's source."""
    tree = ast.parse(source)
    body: set[int] = set()
    checks: set[int] = set()
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, FUNCTIONS):
            stmts = node.body
            if stmts and _is_docstring(stmts[0]):
                docstrings |= _lines(stmts[0])
            for stmt in stmts:
                body |= _lines(stmt)
            checks |= _check_lines(stmts)
    code = _code_lines(source) - docstrings
    body &= code
    return len(checks & body), len(body)


def report(paths: list[Path] | None = None, out=sys.stdout) -> dict:
    """Print one line per module and the total; return the total as a dict (also printed as JSON, last)."""
    paths = modules() if paths is None else paths
    total_checks = total_body = 0
    for path in paths:
        checks, body = count(path.read_text())
        total_checks, total_body = total_checks + checks, total_body + body
        if body:
            name = path.relative_to(ROOT).as_posix()
            print(f"{name:42s} {checks:5d} / {body:5d}  {checks / body:6.1%}", file=out)
    ratio = total_checks / total_body if total_body else 0.0
    print(f"{'total':42s} {total_checks:5d} / {total_body:5d}  {ratio:6.1%}", file=out)
    result = {"check_lines": total_checks, "body_lines": total_body, "ratio": round(ratio, 4)}
    print(json.dumps(result), file=out)
    return result


if __name__ == "__main__":
    report()
