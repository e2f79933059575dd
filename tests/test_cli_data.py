"""The `cai init / constitution / prompts / prefs` commands, run in-process through `cai.cli.main`."""

from __future__ import annotations

import argparse
import json

import pytest

from cai.cli import main, make_parser

OWN = ("init", "constitution", "prompts", "prefs")
HH = "hh-rlhf/harmless-base/dev-sample.jsonl.gz"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_command_has_help_and_db(capsys):
    top = _subparsers(make_parser())
    commands = []
    for name in OWN:
        subs = _subparsers(top[name])
        commands += [(f"{name} {s}", p) for s, p in subs.items()] if subs else [(name, top[name])]
    assert len(commands) == 19
    for label, parser in commands:
        assert parser.description and len(parser.description) > 15, label
        options = {o for a in parser._actions for o in a.option_strings}
        assert "--db" in options, label
        for action in parser._actions:
            if action.dest not in ("help",):
                assert action.help, f"{label}: {action.dest} has no help"
        assert parser.format_help().startswith("usage: cai " + label), label
    with pytest.raises(SystemExit) as exc:
        main(["constitution", "export", "--help"])
    assert exc.value.code == 0
    assert "--kind" in capsys.readouterr().out


def test_init_is_idempotent(capsys, db_path):
    first = run_json(capsys, "init", "--db", str(db_path))
    assert first == {
        "db": str(db_path),
        "constitution": {"name": "default", "version": 1, "version_id": 1},
        "prompt_sets": {"sample-red-team": 16, "sample-helpful": 8},
        "pref_sets": {"sample-harmless-prefs": 12},
        "models": ["smollm2", "gemma3-270m", "default", "tiny"],
        "campaign": "sample-embedded-helpfulness",
        "converted": {},  # the tests set CAI_PREPARE_MODELS=0: no embedded model is converted (test_model_prep)
    }
    assert run_json(capsys, "init", "--db", str(db_path)) == {**first, "campaign": None}  # made once
    code, out, _ = run(capsys, "init", "--db", str(db_path))
    assert out.startswith(f"workbench ready: {db_path}\nconstitution 'default' v1")


def test_done_when_paper_round_trip_and_hh_import(capsys, db_path, shared, tmp_path):
    db = str(db_path)
    src = shared / "cai-paper" / "prompts" / "CritiqueRevisionInstructions.json"
    run(capsys, "init", "--db", db)
    code, out, err = run(capsys, "constitution", "import", str(src), "--db", db)
    assert (code, out) == (0, "imported 16 (critique) into 'CritiqueRevisionInstructions' v1\n"), err
    out_file = tmp_path / "out.json"
    code, _, err = run(
        capsys, "constitution", "export", str(out_file), "--format", "paper", "--kind", "critique", "--db", db
    )
    assert code == 0, err
    assert out_file.read_bytes() == src.read_bytes()
    assert run_json(capsys, "prefs", "import", str(shared / HH), "--name", "hh", "--db", db) == {
        "imported": 418
    }
    listed = run_json(capsys, "prefs", "list", "--db", db)
    assert [(s["name"], s["source"], s["count"], s["mean_p"]) for s in listed] == [
        ("sample-harmless-prefs", "human", 12, 1.0), ("hh", "human", 418, 1.0)]  # the first one: `cai init`
    code, _, err = run(capsys, "prefs", "import", str(shared / HH), "--name", "hh", "--db", db)
    assert (code, err) == (2, "error: preference set 'hh' already exists; choose another --name\n")


def test_constitution_commands(capsys, db_path, shared, tmp_path):
    db = str(db_path)
    run(capsys, "init", "--db", db)
    few = shared / "cai-paper" / "prompts" / "RLMadisonFewShotPrompts.json"
    got = run_json(capsys, "constitution", "import", str(few), "--into", "default", "--db", db)
    assert (got["name"], got["version"], got["format"], got["count"]) == (
        "default",
        2,
        "comparison-exemplars",
        5,
    )
    assert [c["name"] for c in run_json(capsys, "constitution", "list", "--db", db)] == ["default"]
    shown = run_json(capsys, "constitution", "show", "--kind", "comparison", "--db", db)
    assert len(shown["principles"]) == 17 and shown["version"] == 2
    got = run_json(capsys, "constitution", "disable", "bias", "--db", db)
    assert (got["version"], got["note"]) == (3, "disable principle 'bias'")
    got = run_json(capsys, "constitution", "edit", "calm", "--text", "Pick the calmer reply.", "--db", db)
    assert got["note"] == "edit principle 'calm': text"
    got = run_json(
        capsys,
        "constitution",
        "add",
        "mine",
        "--kind",
        "critique",
        "--critique",
        "Any harm?",
        "--revision",
        "Remove it.",
        "--db",
        db,
    )
    assert got["version"] == 5
    diff = run_json(capsys, "constitution", "diff", "3", "4", "--db", db)
    assert diff == [
        {
            "change": "changed",
            "target": "principle",
            "kind": "comparison",
            "name": "calm",
            "fields": {
                "text": {
                    "before": diff[0]["fields"]["text"]["before"],
                    "after": "\nPick the calmer reply. Options:",
                }
            },
        }
    ]
    assert run_json(capsys, "constitution", "restore", "1", "--db", db)["note"] == "restore version 1"
    versions = run_json(capsys, "constitution", "versions", "--db", db)
    assert [(v["version"], v["exemplars"], v["disabled"]) for v in versions] == [
        (1, 11, 0),
        (2, 12, 0),
        (3, 12, 1),
        (4, 12, 1),
        (5, 12, 1),
        (6, 11, 0),
    ]
    out = tmp_path / "few.json"
    assert (
        run(
            capsys,
            "constitution",
            "export",
            str(out),
            "--kind",
            "comparison-exemplars",
            "--version",
            "2",
            "--db",
            db,
        )[0]
        == 0
    )
    assert out.read_bytes() == few.read_bytes()
    code, _, err = run(capsys, "constitution", "export", str(out), "--db", db)
    assert (code, err.startswith("error: the paper format holds one kind per file")) == (2, True)
    code, text, _ = run(capsys, "constitution", "diff", "1", "6", "--db", db)
    assert text == "no differences\n"


def test_prompts_commands(capsys, db_path, tmp_path):
    db = str(db_path)
    src = tmp_path / "p.csv"
    src.write_text("prompt\nHow do I stay safe online?\nWhat is a VPN?\n")
    got = run_json(capsys, "prompts", "import", str(src), "--name", "mine", "--kind", "helpful", "--db", db)
    assert got == {"imported": 2}
    rows = run_json(capsys, "prompts", "list", "--name", "mine", "--limit", "1", "--db", db)
    assert [r["text"] for r in rows] == ["\n\nHuman: How do I stay safe online?\n\nAssistant:"]
    out = tmp_path / "p.jsonl"
    assert run_json(capsys, "prompts", "export", str(out), "--name", "mine", "--db", db) == {
        "path": str(out),
        "rows": 2,
    }
    assert [json.loads(x) for x in out.read_text().splitlines()][1] == {
        "prompt": "\n\nHuman: What is a VPN?\n\nAssistant:"
    }
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"prompt": "b"}\n{oops}\n')
    code, _, err = run(
        capsys, "prompts", "import", str(bad), "--name", "bad", "--kind", "red-team", "--db", db
    )
    assert code == 2 and err.startswith(f"error: {bad}:3: not valid JSON")
    assert [s["name"] for s in run_json(capsys, "prompts", "list", "--db", db)] == ["mine"]
