"""#25.4: every CSV the workbench writes neutralises spreadsheet formulas (OWASP's rule); JSONL is untouched."""

from __future__ import annotations

import pandas as pd

from cai.csv_out import neutralise, safe_frame, write_csv


def test_text_cells_that_a_spreadsheet_would_run_get_a_leading_quote():
    cells = ["=1+1", "+1", "-2", "@SUM(1+1)*cmd|' /C calc'!A0", "\tx", "\rx", "plain", " =padded", "", "'q"]
    assert [neutralise(c) for c in cells] == [
        "'=1+1", "'+1", "'-2", "'@SUM(1+1)*cmd|' /C calc'!A0", "'\tx", "'\rx", "plain", " =padded", "", "'q"]
    assert [neutralise(v) for v in (-3, -1.5, None, True)] == [-3, -1.5, None, True]


def test_write_csv_keeps_numbers_and_rewrites_only_formula_text(tmp_path):
    frame = pd.DataFrame({"comment": ["=HYPERLINK(\"http://x\")", "fine"], "score": [-1.5, 2.0], "=col": [1, 2]})
    write_csv(frame, tmp_path / "x.csv")
    assert (tmp_path / "x.csv").read_text() == "comment,score,'=col\n" \
        "\"'=HYPERLINK(\"\"http://x\"\")\",-1.5,1\nfine,2.0,2\n"
    assert safe_frame(frame) is not frame and frame["comment"][0] == "=HYPERLINK(\"http://x\")"  # the input is left as is
