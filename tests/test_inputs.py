"""Bad input never gives a traceback: one reader for every file (UTF-8, JSON depth, gzip bombs), import limits,
JSON shapes, --db paths, id filters, constitution size; every message is one line that names the file."""

from __future__ import annotations

import gzip
import json
import random
import sqlite3

import gradio as gr
import pytest

from cai import constitution as C
from cai import data as D
from cai import files, store
from cai.cli import error_line, main
from cai.evals.hhh import read_hhh
from cai.evals.ratings import read_votes

READERS = {
    "prompts.jsonl": D.read_prompts,
    "prompts.json": D.read_prompts,
    "prompts.csv": D.read_prompts,
    "prompts.txt": D.read_prompts,
    "pairs.jsonl": D.read_pairs,
    "votes.json": read_votes,
    "votes.jsonl": read_votes,
    "votes.csv": read_votes,
    "hhh.jsonl": read_hhh,
    "constitution.json": C.load_json,
}


def _not_utf8(seed: int) -> bytes:
    """Random bytes that are not UTF-8, with some newlines so the line number matters."""
    rng = random.Random(seed)
    while True:
        raw = b"\n".join(rng.randbytes(rng.randint(1, 40)) for _ in range(20))
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw


def _expected(path, raw: bytes) -> str:
    try:
        raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
    raise AssertionError("the bytes decode")


@pytest.mark.parametrize("name", sorted(READERS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_reader_names_file_and_line_for_random_bytes(tmp_path, name, seed):
    raw = _not_utf8(seed)
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(files.DataError) as err:
        READERS[name](path)
    assert str(err.value) == _expected(path, raw)


def test_random_bytes_in_gzip_and_through_the_cli(tmp_path, db_path, capsys):
    raw = _not_utf8(7)
    gz = tmp_path / "pairs.jsonl.gz"
    gz.write_bytes(gzip.compress(raw))
    with pytest.raises(files.DataError, match="not UTF-8 text"):
        D.read_pairs(gz)
    votes = tmp_path / "votes.jsonl"
    votes.write_bytes(raw)
    assert main(["ratings", "--votes", str(votes), "--db", str(db_path)]) == 2
    assert capsys.readouterr().err == f"error: {_expected(votes, raw)}\n"


@pytest.mark.parametrize(
    ("name", "reader"),
    [("p.jsonl", D.read_prompts), ("p.json", D.read_prompts), ("q.jsonl", D.read_pairs), ("v.json", read_votes),
     ("v.jsonl", read_votes), ("h.jsonl", read_hhh), ("c.json", C.load_json)],
)
def test_deeply_nested_json_is_a_clear_error(tmp_path, name, reader):
    path = tmp_path / name
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(files.DataError, match=r"not valid JSON \(nested too deeply\)") as err:
        reader(path)
    assert str(err.value).startswith(str(path))


def test_json_shapes(tmp_path, db, db_path, capsys):
    prompts = tmp_path / "p.json"
    prompts.write_text("[1, 2]")
    with pytest.raises(files.DataError) as err:
        D.read_prompts(prompts)
    assert str(err.value) == f"{prompts}: item 0: expected a string or an object with a prompt, got int"
    votes = tmp_path / "v.json"
    votes.write_text("[1, 2, 3]")
    with pytest.raises(files.DataError) as err:
        read_votes(votes)
    assert str(err.value) == f"{votes}: item 0: expected a JSON object (model_a, model_b, winner), got int"
    votes.write_text('[{"model_a": 1, "model_b": "y", "winner": "model_a"}]')
    with pytest.raises(ValueError, match=r"row 1: model_a must be a string, got 1"):
        read_votes(votes)
    hhh = tmp_path / "h.jsonl"
    hhh.write_text('{"prompt": "x", "corrects": 5, "incorrects": [" (B)"]}\n')
    with pytest.raises(ValueError, match=r"h.jsonl:1: corrects/incorrects must be lists of strings"):
        read_hhh(hhh)
    # A non-string constitution name (our format) is refused before it reaches SQLite.
    for bad in (5, ["x"], {"a": 1}):
        cf = tmp_path / "c.json"
        cf.write_text(json.dumps({"format": C.FORMAT, "name": bad, "principles": [], "exemplars": []}))
        with pytest.raises(files.DataError, match=r"constitution name must be a string, got "):
            C.import_file(db, cf)
    assert main(["prompts", "import", str(prompts), "--name", "x", "--kind", "red-team", "--db", str(db_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: {prompts}: item 0: expected a string or an object with a prompt, got int\n")


def test_gzip_bomb_stops_at_the_byte_limit(tmp_path):
    bomb = tmp_path / "bomb.jsonl.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        block = b" " * (1 << 20)
        for _ in range(64):  # 64 MiB of spaces, ~64 kB on disk
            f.write(block)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(files.DataError) as err:
        D.read_pairs(bomb, limits=files.Limits(rows=10, bytes=8 << 20))
    assert str(err.value) == (
        f"{bomb}: over the import limit of 8,388,608 bytes once decompressed; raise it with --max-bytes or "
        "$CAI_MAX_IMPORT_BYTES")


def test_row_and_byte_limits_are_stated_and_configurable(tmp_path, db_path, capsys, monkeypatch):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(30)))
    args = ["prompts", "import", str(path), "--name", "many", "--kind", "red-team", "--db", str(db_path)]
    assert main([*args, "--max-rows", "29"]) == 2
    assert capsys.readouterr().err == (
        f"error: {path}: more than 29 rows, over the import limit; raise it with --max-rows or "
        "$CAI_MAX_IMPORT_ROWS\n")
    monkeypatch.setenv("CAI_MAX_IMPORT_BYTES", "100")
    assert main(args) == 2
    assert capsys.readouterr().err == (
        f"error: {path}: over the import limit of 100 bytes; raise it with --max-bytes or $CAI_MAX_IMPORT_BYTES\n")
    assert main([*args, "--max-rows", "30", "--max-bytes", "100000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"imported": 30}
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": "\n\nHuman: Q?\n\nAssistant:", "chosen": " a", "rejected": " b"})
                             + "\n" for _ in range(3)))
    assert main(["prefs", "import", str(pairs), "--name", "pp", "--max-rows", "2", "--max-bytes", "100000", "--db", str(db_path)]) == 2
    assert "more than 2 rows, over the import limit" in capsys.readouterr().err
    assert store.connect(db_path)["pref_sets"].count == 0  # nothing stored


def test_large_import_shows_a_progress_bar(tmp_path, db_path, capsys):
    path = tmp_path / "big.txt"
    line = "Tell me about the history of the printing press in some detail, please? " * 3
    path.write_text("".join(f"{i} {line}\n" for i in range(5_000)))
    assert path.stat().st_size > 1_000_000
    assert main(["prompts", "import", str(path), "--name", "big", "--kind", "helpful", "--db", str(db_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "imported 5000 prompts into 'big'\n"
    assert "reading big.txt" in captured.err and "5000 prompts" in captured.err


def test_constitution_size_is_bounded(tmp_path, db):
    principles = [{"kind": "comparison", "name": f"p{i}", "text": "Which is kinder?"}
                  for i in range(C.MAX_PRINCIPLES + 1)]
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"format": C.FORMAT, "name": "huge", "principles": principles, "exemplars": []}))
    with pytest.raises(files.DataError) as err:
        C.import_file(db, path)
    assert str(err.value) == f"{path}: 1,001 principles, over the limit of 1,000"
    with pytest.raises(files.DataError, match="1,001 principles, over the limit of 1,000"):
        C.create_constitution(db, "direct", principles=principles)


def test_db_paths(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "folder"
    folder.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    cases = {
        str(folder): f"error: {folder}: is a folder; --db needs a database file\n",
        str(text): f"error: {text}: not a SQLite database (it is another kind of file)\n",
        "/dev/null": "error: /dev/null: not a regular file; --db needs a database file\n",
        ":memory:": "error: --db :memory: is not supported: runs and the web app share one database file\n",
        str(text / "x.db"): f"error: {text / 'x.db'}: its folder {text} is a file\n",
    }
    for db_arg, message in cases.items():
        assert main(["prompts", "list", "--db", db_arg]) == 2, db_arg
        assert capsys.readouterr().err == message
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["init", "--db", "~/home.db", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["db"] == str(tmp_path / "home.db")
    assert (tmp_path / "home.db").is_file()


def test_export_to_a_folder_and_big_ids(tmp_path, db_path, capsys):
    assert main(["init", "--db", str(db_path)]) == 0
    capsys.readouterr()
    assert main(["constitution", "export", str(tmp_path), "--kind", "critique", "--db", str(db_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: is a folder; give the file to write\n"
    assert main(["prompts", "export", str(tmp_path), "--name", "sample-helpful", "--db", str(db_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: is a folder; give the file to write\n"
    with pytest.raises(SystemExit):
        main(["chains", "list", "--run", str(2**63), "--db", str(db_path)])
    assert "--run: 9223372036854775808 is not a valid id (1 .. 2**63-1)" in capsys.readouterr().err


def test_the_top_level_handler_makes_any_error_one_line():
    assert error_line(IsADirectoryError(21, "Is a directory", "/tmp/x")) == ("/tmp/x: Is a directory", 2)
    assert error_line(sqlite3.OperationalError("disk I/O error")) == ("database error: disk I/O error", 2)
    try:
        [].pop()
    except IndexError as exc:  # an IndexError is a LookupError: the user's kind
        assert error_line(exc) == ("pop from empty list", 2)
    try:
        None.strip()  # type: ignore[union-attr]
    except AttributeError as exc:
        line, status = error_line(exc)
    assert status == 1
    assert line.startswith("AttributeError: 'NoneType' object has no attribute 'strip' (at test_inputs.py:")
    assert line.endswith("); set CAI_TRACEBACK=1 for the traceback")


def test_chains_filter_refuses_nul_and_huge_ids():
    from ui.chains import ChainFilter, _filter

    with pytest.raises(gr.Error, match="Run: 9223372036854775808 is not a valid id"):
        _filter(str(2**63), "", "", "", "")
    with pytest.raises(gr.Error, match="Search text: contains a NUL character"):
        _filter("", "", "", "", "a\x00b")
    with pytest.raises(gr.Error, match="Model: 'abc' is not an id"):
        _filter("", "abc", "", "", "")
    assert _filter("3", "", "7", "harm", "x") == ChainFilter(3, None, 7, "harm", "x")


def test_gold_pairs_go_through_the_one_reader(tmp_path, db_path, capsys):
    raw = _not_utf8(3)
    gold = tmp_path / "gold.jsonl"
    gold.write_bytes(raw)
    assert main(["arena", "gold", str(gold), "--campaign", "c", "--db", str(db_path)]) == 2
    assert capsys.readouterr().err == f"error: {_expected(gold, raw)}\n"
    gold.write_text('{"prompt": "p", "better": "b", "worse": "w"}\n[1, 2]\n')
    assert main(["arena", "gold", str(gold), "--campaign", "c", "--db", str(db_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: {gold}: gold pair 2: expected a JSON object (prompt, better, worse)\n")
