"""Numbers and tables as text, shared by the CLI, the Result tables and the HTML report."""

from __future__ import annotations

import math
import unicodedata


def format_value(value, digits: int = 6) -> str:
    """A number as people read it: n/a for missing or NaN, inf, whole numbers in full."""
    if value is None:
        return "n/a"
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))  # exact sums (e.g. sum_abs_diff) print in full
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.{digits - 2}e}"
        return f"{value:.{digits}g}"
    return str(value)


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: wide (CJK) characters take two, combining marks none."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def _pad(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))


def format_table(headers: list[str], rows: list[list]) -> str:
    """Left-aligned columns under a rule; cells through :func:`format_value`. Columns line up in a
    terminal also for file names in Chinese, Japanese or Korean (two columns per character)."""
    cells = [[str(h) for h in headers]] + [[format_value(c) for c in row] for row in rows]
    widths = [max(display_width(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(_pad(c, w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
