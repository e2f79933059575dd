"""Every CSV the workbench writes goes through `write_csv`, which neutralises spreadsheet formulas.

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is run as a formula by Excel,
LibreOffice and Sheets (a rater's comment `@SUM(1+1)*cmd|' /C calc'!A0`); OWASP's rule is to prefix such a
text cell with a single quote, which shows the text as typed. Only text cells change (a negative number
stays a number), and JSONL/Parquet exports are written untouched.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    """`value` with a leading quote if it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells (and column names) are neutralised."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(neutralise)
    out.columns = [neutralise(c) for c in out.columns]
    return out


def write_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    safe_frame(frame).to_csv(path, index=False)
