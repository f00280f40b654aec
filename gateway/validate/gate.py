"""The all-valid fast path: one regular expression per file layout, compiled from the schema.

A row's cells are joined with NUL (which no column accepts) and matched in one call. The gate
is sound, never lenient: if it matches, every cell meets its schema keywords; if it does not,
the row goes to the exact checks, which alone decide and explain.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gateway.validate.rules import FORMULA_LOOKAHEAD
from gateway.validate.schema import Column

SEPARATOR = "\x00"
_ANY_CELL = r"[^\x00]*"


def compile_gate(layout: Sequence[Column | None], *, formula_guard: bool) -> re.Pattern[str]:
    """Compile the row matcher for cells laid out as `layout` (None: a column the report already refused)."""
    return re.compile(r"\x00".join(_cell(column, formula_guard) for column in layout))


def _cell(column: Column | None, formula_guard: bool) -> str:
    if column is None:
        return rf"(?>{_ANY_CELL})"
    if column.pattern is not None:
        body = f"(?:{column.pattern.pattern})"
    elif column.enum is not None:
        body = "(?:" + "|".join(re.escape(v) for v in sorted(column.enum, key=len, reverse=True)) + ")"
    else:
        body = _ANY_CELL
    guards = r"(?=[^\x00])"
    if column.max_length is not None:
        guards += rf"(?=[^\x00]{{0,{column.max_length}}}(?:\x00|\Z))"
    if column.min_length is not None:
        guards += rf"(?=[^\x00]{{{column.min_length}}})"
    if column.free_text and formula_guard:
        guards += FORMULA_LOOKAHEAD
    cell = guards + body if column.required else f"(?:{guards}{body})?"
    # Atomic: once a cell has matched up to its boundary, a later failure never re-enters it.
    return rf"(?>{cell}(?=\x00|\Z))"
