"""Number formatting and tables: values as people read them, columns that line up."""

from __future__ import annotations

import math

from imgdist.formatting import display_width, format_table, format_value


def test_format_value():
    assert format_value(None) == "n/a" and format_value(math.nan) == "n/a"
    assert format_value(math.inf) == "inf" and format_value(-math.inf) == "-inf"
    assert format_value(900.0) == "900"            # exact sums in full
    assert format_value(27.271344) == "27.2713"
    assert format_value(2.5e-5) == "2.5000e-05"


def test_display_width_counts_wide_characters_twice():
    assert display_width("abc") == 3
    assert display_width("猫の写真") == 8
    assert display_width("e\u0301") == 1          # e + combining acute accent


def test_columns_align_with_cjk_names():
    table = format_table(["b", "mse"], [["猫の写真.png", 1.5], ["dog.png", 22.25], ["고양이.png", 3.0]])
    lines = table.splitlines()
    # the second column starts at the same terminal column on every line
    starts = {display_width(line[: line.index(value)]) for line, value in
              zip(lines[2:], ["1.5", "22.25", "3"])}
    assert len(starts) == 1, table
    assert display_width(lines[1]) == max(display_width(line) for line in lines)
