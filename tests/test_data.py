"""Prompt and preference import (every format, every kind of bad input) and TRL-column export."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from cai import data as D
from cai.data import DataError
from cai.store import now

HH = "hh-rlhf/harmless-base/dev-sample.jsonl.gz"


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return p


def nothing_stored(db) -> bool:
    return all(db[t].count == 0 for t in ("prompt_sets", "prompts", "pref_sets", "pairs"))


# ----------------------------------------------------------------------------- prompts


def test_import_prompts_every_format(db, tmp_path):
    multi = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: fine"
    files = {
        "a.jsonl": "\n".join(
            json.dumps(r)
            for r in [
                {"prompt": "How do I pick a lock?"},
                {"text": "Hi there"},
                {"chosen": multi, "rejected": "x"},
            ]
        )
        + "\n\n",
        "b.csv": 'id,prompt\n1,"Why is the sky blue?"\n2,"Two, with comma"\n',
        "c.txt": "first prompt\n\n  second prompt  \n",
        "d.json": json.dumps(["one", {"prompt": "two"}]),
        "e.txt": "Human: hi\n\nAssistant: hello\n\nHuman: and?\n---\n\nHuman: second\n\nAssistant: ok\n",
    }
    got = {}
    for name, text in files.items():
        n = D.import_prompts(db, write(tmp_path, name, text), name, "red-team")
        got[name] = [r["text"] for r in D.list_prompts(db, name)]
        assert n == len(got[name])
    assert got == {
        "a.jsonl": [
            "\n\nHuman: How do I pick a lock?\n\nAssistant:",
            "\n\nHuman: Hi there\n\nAssistant:",
            "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant:",
        ],
        "b.csv": [
            "\n\nHuman: Why is the sky blue?\n\nAssistant:",
            "\n\nHuman: Two, with comma\n\nAssistant:",
        ],
        "c.txt": ["\n\nHuman: first prompt\n\nAssistant:", "\n\nHuman: second prompt\n\nAssistant:"],
        "d.json": ["\n\nHuman: one\n\nAssistant:", "\n\nHuman: two\n\nAssistant:"],
        "e.txt": [
            "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?\n\nAssistant:",
            "\n\nHuman: second\n\nAssistant:",
        ],
    }
    s = D.get_prompt_set(db, "b.csv")
    assert (s["kind"], s["count"], s["source"]) == ("red-team", 2, str(tmp_path / "b.csv"))
    assert [r["position"] for r in D.list_prompts(db, "a.jsonl", limit=2)] == [0, 1]
    assert [(r["name"], r["count"]) for r in D.list_prompt_sets(db)] == [
        ("a.jsonl", 3),
        ("b.csv", 2),
        ("c.txt", 2),
        ("d.json", 2),
        ("e.txt", 2),
    ]


def test_import_prompts_from_hh_rlhf_takes_the_conversation_up_to_the_last_human_turn(db, shared):
    n = D.import_prompts(db, shared / HH, "hh-prompts", "red-team")
    assert n == 418
    rows = D.list_prompts(db, "hh-prompts")
    assert all(r["text"].startswith("\n\nHuman:") and r["text"].endswith("\n\nAssistant:") for r in rows)
    assert rows[181]["text"] == (
        "\n\nHuman: Why are people in New York City such poor drivers?\n\nAssistant: Because they live in New "
        "York City.\n\nHuman: But why do they suck and drive so erractictly?\n\nAssistant:"
    )


def test_seed_samples(db):
    assert D.seed_samples(db) == {"sample-red-team": 16, "sample-helpful": 8}
    assert D.seed_samples(db) == {"sample-red-team": 16, "sample-helpful": 8}
    assert D.get_prompt_set(db, "sample-helpful")["kind"] == "helpful"
    assert D.list_prompts(db, "sample-helpful")[-1]["text"] == "\n\nHuman: Why is the sky blue?\n\nAssistant:"


def test_duplicate_and_unknown_names(db, tmp_path):
    f = write(tmp_path, "p.txt", "a\n")
    D.import_prompts(db, f, "s", "helpful")
    with pytest.raises(DataError, match="prompt set 's' already exists"):
        D.import_prompts(db, f, "s", "helpful")
    with pytest.raises(DataError, match="kind must be one of red-team, helpful"):
        D.import_prompts(db, f, "t", "nice")
    with pytest.raises(LookupError, match=r"no prompt set named 'zz' \(known: s\)"):
        D.get_prompt_set(db, "zz")
    assert db["prompts"].count == 1


BIG = "x" * 5_000_000


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c"\n', r"bad.jsonl:3: not valid JSON"),
        (
            "bad.jsonl",
            '{"prompt": "a"}\n\n{"question": "b"}\n',
            r"bad.jsonl:3: missing field: expected one of 'prompt', 'text', 'chosen'",
        ),
        (
            "bad.jsonl",
            '{"prompt": "a"}\n{"prompt": 3}\n',
            r"bad.jsonl:2: field 'prompt' must be a string, got int",
        ),
        ("bad.jsonl", "\n \n", r"bad.jsonl: the file is empty"),
        (
            "bad.jsonl",
            '{"prompt": "a"}\n{"prompt": "caf\xe9"}\n'.encode("latin-1"),
            r"bad.jsonl:2: not UTF-8 text \(byte 0xe9\)",
        ),
        (
            "bad.jsonl",
            '{"prompt": "a"}\n' + json.dumps({"prompt": BIG}),
            r"bad.jsonl:2: field 'prompt' is 5,000,000 bytes, over the limit of 100,000 bytes per text",
        ),
        ("bad.csv", 'prompt\nok\n"broken\n', r"bad.csv:3: bad CSV \(unexpected end of data\)"),
        (
            "bad.csv",
            "question\nok\n",
            r"bad.csv:1: missing column: expected 'prompt' or 'text', found question",
        ),
        ("bad.csv", "id,prompt\n1,a\n2\n", r"bad.csv:3: missing field 'prompt' \(too few columns\)"),
        ("bad.csv", "", r"bad.csv: the file is empty"),
        ("bad.csv", "prompt\nna\xefve\n".encode("latin-1"), r"bad.csv:2: not UTF-8 text"),
        ("bad.csv", "prompt\na\n" + BIG + "\n", r"bad.csv:3: field 'prompt' is 5,000,000 bytes"),
        ("bad.txt", "a\nb\nc\xe9\n".encode("latin-1"), r"bad.txt:3: not UTF-8 text \(byte 0xe9\)"),
        ("bad.txt", "", r"bad.txt: the file is empty"),
        ("bad.txt", "Human: a\n---\nHuman: b\n---\n\nAssistant: c\n", r"bad.txt:5: not an HH transcript"),
        ("bad.txt", "a\nb\n" + BIG, r"bad.txt:3: field 'line' is 5,000,000 bytes"),
        ("bad.json", '[\n"a",\n,\n]', r"bad.json:3: not valid JSON"),
        ("bad.json", '[{"q": 1}]', r"bad.json: item 0: missing field"),
        ("bad.jsonl", '{"prompt": "\\n\\nAssistant: hi"}\n', r"bad.jsonl:1: not an HH transcript"),
    ],
)
def test_bad_prompt_files_name_file_and_line_and_store_nothing(db, tmp_path, name, content, message):
    with pytest.raises(DataError, match=message):
        D.import_prompts(db, write(tmp_path, name, content), "s", "red-team")
    assert nothing_stored(db)


def test_missing_file(db, tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: no such file"):
        D.import_prompts(db, tmp_path / "nope.jsonl", "s", "red-team")


# ----------------------------------------------------------------------------- preference pairs


def test_import_hh_rlhf_pairs(db, shared):
    assert D.import_prefs(db, shared / HH, "hh") == 418
    pairs = D.list_pairs(db, "hh")
    raw = [json.loads(line) for line in gzip.open(shared / HH, "rt", encoding="utf-8")]
    assert all(
        p["prompt"] + p["chosen"] == r["chosen"] and p["prompt"] + p["rejected"] == r["rejected"]
        for p, r in zip(pairs, raw, strict=True)
    )
    assert all(p["prompt"].endswith("\n\nAssistant:") and p["p"] == 1.0 for p in pairs)
    # A multi-turn pair whose two answers share their first words: the prompt ends at the last shared tag.
    p = pairs[181]
    assert (p["prompt"], p["chosen"], p["rejected"], p["meta"]) == (
        "\n\nHuman: Why are people in New York City such poor drivers?\n\nAssistant: Because they live in New "
        "York City.\n\nHuman: But why do they suck and drive so erractictly?\n\nAssistant:",
        " Because they are New Yorkers.",
        " Because they are poor.",
        {"line": 182},
    )
    s = D.get_pref_set(db, "hh")
    assert (s["source"], s["kind"], s["count"], s["provenance"]) == (
        "human",
        "harmless",
        418,
        {"file": str(shared / HH)},
    )
    assert sum(p["prompt"].count("\n\nHuman:") > 1 for p in pairs) == 304


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "bad.jsonl",
            '{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b", "rejected": "\\n\\nHuman: a\\n\\nAssistant: c"}\n'
            '{"prompt": "p", "chosen": "x", "rejected": "y"}\n{"chosen": \n',
            r"bad.jsonl:3: not valid JSON",
        ),
        (
            "bad.jsonl",
            '{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b"}\n',
            r"bad.jsonl:1: missing field 'rejected'",
        ),
        (
            "bad.jsonl",
            '{"chosen": "Human: a", "rejected": "Human: b"}\n',
            r"bad.jsonl:1: the two transcripts share",
        ),
        (
            "bad.jsonl",
            '{"prompt": "p", "chosen": "a", "rejected": "b", "p": 2}\n',
            r"bad.jsonl:1: field 'p' must be a number in \[0, 1\], got 2",
        ),
        ("bad.jsonl", "", r"bad.jsonl: the file is empty"),
        (
            "bad.jsonl",
            '{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'.encode("latin-1"),
            r"bad.jsonl:1: not UTF-8 text",
        ),
        (
            "bad.jsonl",
            json.dumps({"prompt": "p", "chosen": BIG, "rejected": "b"}),
            r"bad.jsonl:1: field 'chosen' is 5,000,000 bytes",
        ),
        ("bad.jsonl.gz", b"not gzip", r"bad.jsonl.gz: not a valid gzip file"),
        (
            "bad.csv",
            "chosen,rejected\na,b\n",
            r"bad.csv: preference pairs must be a .jsonl or .jsonl.gz file",
        ),
    ],
)
def test_bad_pref_files_name_file_and_line_and_store_nothing(db, tmp_path, name, content, message):
    with pytest.raises(DataError, match=message):
        D.import_prefs(db, write(tmp_path, name, content), "s")
    assert nothing_stored(db)


def test_create_pref_set_checks_pairs_and_names(db):
    pair = {
        "prompt": "\n\nHuman: q\n\nAssistant:",
        "chosen": " a",
        "rejected": " b",
        "p": 0.7,
        "meta": {"k": 1},
    }
    set_id = D.create_pref_set(db, "ai", "ai", "harmless", [pair], provenance={"run": 1})
    assert D.list_pairs(db, "ai") == [{"id": 1, "set_id": set_id, "position": 0, **pair}]
    with pytest.raises(DataError, match="preference set 'ai' already exists"):
        D.create_pref_set(db, "ai", "ai", "harmless", [pair])
    with pytest.raises(DataError, match="pair 0: missing p"):
        D.create_pref_set(db, "x", "ai", "harmless", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    with pytest.raises(DataError, match=r"pair 0: p must be in \[0, 1\], got 1.5"):
        D.create_pref_set(db, "x", "ai", "harmless", [{**pair, "p": 1.5}])
    assert [(s["name"], s["count"], s["mean_p"]) for s in D.list_pref_sets(db)] == [("ai", 1, 0.7)]


# ----------------------------------------------------------------------------- export


def _chains(db) -> int:
    run_id = db["runs"].insert({"kind": "sl", "status": "done", "created_at": now()}).last_pk
    for i, (mode, final) in enumerate(
        [("critique", "I can't help with that."), ("helpful", " Sure: here. ")]
    ):
        db["chains"].insert(
            {
                "run_id": run_id,
                "prompt_id": i,
                "sample": 0,
                "mode": mode,
                "prompt": f"\n\nHuman: q{i}\n\nAssistant:",
                "final": final,
                "created_at": now(),
            }
        )
    return int(run_id)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_exports_load_with_datasets(db, shared, tmp_path, suffix):
    from datasets import load_dataset

    D.import_prefs(db, shared / HH, "hh")
    D.seed_samples(db)
    run_id = _chains(db)
    kind = "json" if suffix == ".jsonl" else "parquet"

    prefs = D.write_records(D.pref_records(db, "hh"), tmp_path / f"prefs{suffix}")
    ds = load_dataset(kind, data_files=str(prefs), split="train")
    assert ds.column_names == ["prompt", "chosen", "rejected", "p"]
    assert len(ds) == 418 and ds[181]["chosen"] == " Because they are New Yorkers." and ds[0]["p"] == 1.0

    prompts = D.write_records(D.prompt_records(db, "sample-helpful"), tmp_path / f"prompts{suffix}")
    ds = load_dataset(kind, data_files=str(prompts), split="train")
    assert ds.column_names == ["prompt"] and len(ds) == 8

    chains = D.write_records(D.chain_records(db, run_id), tmp_path / f"chains{suffix}")
    ds = load_dataset(kind, data_files=str(chains), split="train")
    assert ds.to_list() == [
        {"prompt": "\n\nHuman: q0\n\nAssistant:", "completion": " I can't help with that."},
        {"prompt": "\n\nHuman: q1\n\nAssistant:", "completion": " Sure: here."},
    ]
    assert D.chain_records(db, run_id, "helpful") == [ds[1]]


def test_exported_prefs_import_again_unchanged(db, shared, tmp_path):
    D.import_prefs(db, shared / HH, "hh")
    D.create_pref_set(
        db,
        "soft",
        "ai",
        "harmless",
        [{"prompt": "\n\nHuman: q\n\nAssistant:", "chosen": " a", "rejected": " b", "p": 0.25}],
    )
    for name in ("hh", "soft"):
        out = D.write_records(D.pref_records(db, name), tmp_path / f"{name}.jsonl")
        D.import_prefs(db, out, f"{name}-again", source="ai")
        assert D.pref_records(db, f"{name}-again") == D.pref_records(db, name)


def test_export_errors(db, tmp_path):
    with pytest.raises(DataError, match="export to .jsonl or .parquet"):
        D.write_records([{"prompt": "a"}], tmp_path / "x.csv")
    with pytest.raises(DataError, match="nothing to export"):
        D.write_records([], tmp_path / "x.jsonl")
    with pytest.raises(LookupError, match="run 9 has no chains"):
        D.chain_records(db, 9)
