"""The all-valid fast path: one regular expression per file layout, compiled from the schema.

A row's cells are joined with NUL (which no column accepts) and matched in one call. The gate
is sound, never lenient: if it matches, every cell meets its schema keywords; if it does not,
the row goes to the exact checks, which alone decide and explain.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

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
        self._layout, self._formula_guard = tuple(layout), formula_guard
        self._matchers: dict[bool, _Matcher] = {}
        self._check = self.then(None)

    def matcher(self, short: bool) -> _Matcher:
        """The matcher for rows up to `short_limit` characters (`short`) or for any row, compiled on first
        use: compiling one takes tens of milliseconds, longer than a small file takes to check."""
        found = self._matchers.get(short)
        if found is None:
            lengths_from = (self.short_limit or None) if short else None
            found = self._matchers[short] = _compile(self._layout, self._formula_guard, lengths_from)
        return found

    def __call__(self, row: Sequence[str]) -> bool:
        """True only if every cell of `row` meets its schema keywords (False: check it exactly)."""
        return self._check(row)

    def then(self, rules: Callable[[Sequence[str]], bool] | None) -> Callable[[Sequence[str]], bool]:
        """This gate and then `rules` (the code rules' yes/no form, if any), as one call per row."""
        width, separators, limit, matcher = self.width, self.width - 1, self.short_limit, self.matcher
        short: _Matcher | None = None
        full: _Matcher | None = None

        def passes(row: Sequence[str]) -> bool:
            nonlocal short, full
            if len(row) != width:
                return False
            joined = SEPARATOR.join(row)
            if joined.count(SEPARATOR) != separators:
                return False  # a NUL inside a cell: never valid, and it would shift the cells
            if len(joined) <= limit:
                if short is None:
                    short = matcher(True)
                found = short(joined)
            else:
                if full is None:
                    full = matcher(False)
                found = full(joined)
            return found is not None and (rules is None or rules(row))

        return passes


def prefix_tree(values: Iterable[str]) -> str:
    """An alternation matching exactly `values`, written as a prefix tree (`W(?:1|2|hite - British)`): the
    regex engine tries a few first characters instead of every value in turn."""
    tree: dict[str, Any] = {}
    for value in values:
        node = tree
        for char in value:
            node = node.setdefault(char, {})
        node[_END] = {}
    return _branches(tree)


_END = ""  # the key that marks a value ending at this node (every other key is one character)


def _branches(node: dict[str, Any]) -> str:
    branches = [re.escape(char) + _branches(child) for char, child in sorted(node.items()) if char != _END]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if _END in node else body


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
        body = f"(?:{prefix_tree(column.enum)})"
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
