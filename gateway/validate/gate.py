"""The all-valid fast path: one regular expression per file layout, compiled from the schema.

A row's cells are joined with NUL (which no column accepts) and matched in one call. The gate
is sound, never lenient: if it matches, every cell meets its schema keywords; if it does not,
the row goes to the exact checks, which alone decide and explain.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from gateway.validate.rules import FORMULA_LOOKAHEAD
from gateway.validate.schema import Column, negated_class

SEPARATOR = "\x00"
_ANY_CELL = r"[^\x00]*"
_Matcher = Callable[[str], re.Match[str] | None]


class Gate:
    """The row matcher for cells laid out as `layout` (None: a column the report already refused)."""

    def __init__(self, layout: Sequence[Column | None], *, formula_guard: bool) -> None:
        self.width = len(layout)
        # A row no longer than the longest maxLength cannot have a cell over it: for such rows
        # (nearly all) the matchers skip those length lookaheads, which would otherwise scan
        # every free-text character twice.
        self.short_limit = max((c.max_length for c in layout if c is not None and c.max_length), default=0)
        self.full = _compile(layout, formula_guard, lengths_from=None)
        self.short = _compile(layout, formula_guard, lengths_from=self.short_limit or None)

    def __call__(self, row: Sequence[str]) -> bool:
        """True only if every cell of `row` meets its schema keywords (False: check it exactly)."""
        if len(row) != self.width:
            return False
        joined = SEPARATOR.join(row)
        if joined.count(SEPARATOR) != self.width - 1:
            return False  # a NUL inside a cell: never valid, and it would shift the cells
        matcher = self.short if len(joined) <= self.short_limit else self.full
        return matcher(joined) is not None


def _compile(layout: Sequence[Column | None], formula_guard: bool, lengths_from: int | None) -> _Matcher:
    return re.compile(r"\x00".join(_cell(column, formula_guard, lengths_from) for column in layout)).fullmatch


def _cell(column: Column | None, formula_guard: bool, lengths_from: int | None) -> str:
    if column is None:
        return rf"(?>{_ANY_CELL})"
    refused = "".join(refusal.chars for refusal in column.refusals)  # schema allOf: refused anywhere
    if column.pattern is not None:
        allowed = negated_class(column.pattern.pattern)
        if allowed is not None and refused:
            # free text, `[^…]*`: the refused characters join its class, costing no second scan
            body, refused = f"[^\\x00{allowed}{refused}]*", ""
        else:
            body = f"(?:{column.pattern.pattern})"
    elif column.enum is not None:
        body = "(?:" + "|".join(re.escape(v) for v in sorted(column.enum, key=len, reverse=True)) + ")"
    else:
        body = _ANY_CELL
    guards = r"(?=[^\x00])"
    if refused:
        guards += rf"(?=[^\x00{refused}]*(?:\x00|\Z))"
    if column.max_length is not None and (lengths_from is None or column.max_length < lengths_from):
        guards += rf"(?=[^\x00]{{0,{column.max_length}}}(?:\x00|\Z))"
    if column.min_length is not None:
        guards += rf"(?=[^\x00]{{{column.min_length}}})"
    if column.free_text and formula_guard:
        guards += FORMULA_LOOKAHEAD
    cell = guards + body if column.required else f"(?:{guards}{body})?"
    # Atomic: once a cell has matched up to its boundary, a later failure never re-enters it.
    return rf"(?>{cell}(?=\x00|\Z))"
