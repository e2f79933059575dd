"""`cai run`, `cai runs` and `cai chains`: generic flags from the config dataclasses, and a real run."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from cai import runs, sl, store
from cai.cli import main, make_parser
from cai.cli.runs import config_values, format_chain, parse_constitution, progress_line
from cai.config import fields_help
from cai.constitution import resolve_version
from cai.stages import REGISTRY, SLConfig
from tests.helpers import seed


@pytest.mark.parametrize(
    ("text", "parsed"), [("default", ("default", None)), ("mine@2", ("mine", 2)), ("3", ("", 3)), ("a@b@4", ("a@b", 4))]
)
def test_parse_constitution(text, parsed):
    assert parse_constitution(text) == parsed


def test_parse_constitution_rejects_a_bad_version():
    with pytest.raises(ValueError, match="the part after '@' must be a version number"):
        parse_constitution("mine@latest")


def test_every_stage_has_a_run_command_with_a_helped_flag_per_field():
    parser = make_parser()
    run = next(a for a in parser._subparsers._group_actions[0].choices["run"]._actions
               if a.dest == "kind")
    assert sorted(run.choices) == sorted(REGISTRY)
    for kind, stage in REGISTRY.items():
        flags: dict[str, Any] = {}
        for a in run.choices[kind]._actions:  # the field's own flag (an alias like --one-order comes after)
            flags.setdefault(a.dest, a)
        for f in fields_help(stage.config):
            action = flags[f"cfg_{f['name']}"]
            assert action.help and action.help.startswith(f["help"]), (kind, f["name"])
            assert action.option_strings[0] == "--" + f["name"].replace("_", "-")


def test_flags_become_config_values():
    args = make_parser().parse_args(["run", "sl", "--prompts", "red", "--direct", "--revisions", "3",
                                     "--constitution", "mine@2", "--batch-size", "4", "--limit", "8"])
    values = config_values(args)
    assert values == {"prompts": "red", "direct": True, "revisions": 3, "constitution": "mine",
                      "constitution_version": 2, "batch_size": 4, "limit": 8}
    assert SLConfig.from_dict(values).to_dict() == {
        "prompts": "red", "model": "gemma3-270m", "constitution": "mine", "constitution_version": 2, "revisions": 3,
        "direct": True, "few_shot": 2, "limit": 8, "batch_size": 4, "max_new_tokens": 128, "temperature": 0.0,
        "seed": 0, "principles": "", "num_principles": None, "stratified": False, "helpful_prompts": "", "helpful_samples": 2,
    }
    args = make_parser().parse_args(["run", "sft", "--chains", "5", "--lora", "--no-lora"])
    assert config_values(args) == {"chains": 5, "lora": False}


def test_bad_input_is_one_clear_line(db_path, capsys):
    assert main(["runs", "show", "99", "--db", str(db_path)]) == 2  # reading commands never create a database
    assert capsys.readouterr().err.startswith(f"error: {db_path}: no such workbench database")
    store.connect(db_path).close()
    assert main(["run", "sl", "--db", str(db_path)]) == 2
    assert capsys.readouterr().err == "error: prompts: name a red-team prompt set\n"
    assert main(["run", "sl", "--db", str(db_path), "--prompts", "red", "--revisions", "9"]) == 2
    assert capsys.readouterr().err == "error: revisions: must be <= 8, got 9\n"
    assert main(["runs", "show", "99", "--db", str(db_path)]) == 2
    assert capsys.readouterr().err == "error: no run with id 99\n"
    assert main(["chains", "show", "99", "--db", str(db_path)]) == 2
    assert capsys.readouterr().err == "error: no chain with id 99\n"


def test_progress_line():
    run = {"id": 3, "kind": "sl", "status": "running", "done": 2, "total": 8, "tokens_per_s": 41.27, "eta_s": 12.4}
    assert progress_line(run) == "run 3 sl running: 2/8  41.3 tok/s  ETA 12 s"
    assert progress_line({**run, "status": "done", "tokens_per_s": None}) == "run 3 sl done: 2/8"


def test_format_chain_shows_each_step_with_its_principle():
    chain = {"id": 1, "run_id": 2, "prompt_id": 3, "sample": 0, "mode": "critique", "model": "tiny",
             "constitution": "test@1", "prompt": "\n\nHuman: Q?\n\nAssistant:",
             "steps": [
                 {"kind": "initial", "round": 0, "principle": "", "flags": [], "sent": "S0", "output": " A."},
                 {"kind": "critique", "round": 1, "principle": "harm", "flags": [], "sent": "S1", "output": " C."},
                 {"kind": "revision", "round": 1, "principle": "harm", "flags": ["empty"], "sent": "S2", "output": ""},
             ]}
    assert format_chain(chain) == (
        "chain 1  run 2  prompt 3  sample 0  mode critique  model tiny  constitution test@1\n"
        "prompt:\n\nHuman: Q?\n\nAssistant:\n"
        "--- initial ---\nA.\n--- critique 1 [harm] ---\nC.\n--- revision 1 [harm]  flags: empty ---\n(empty)"
    )


@pytest.mark.timeout(180)
def test_run_sl_then_list_show_export(db, db_path, tmp_path, capsys):
    seed(db, n_prompts=4)
    base = ["--db", str(db_path)]
    assert main(["run", "sl", *base, "--prompts", "red", "--model", "tiny", "--constitution", "test@1",
                 "--revisions", "1", "--limit", "3", "--batch-size", "2", "--max-new-tokens", "6", "--json"]) == 0
    out = capsys.readouterr()
    run = json.loads(out.out)
    assert (run["status"], run["done"], run["total"], run["result"]["chains"]) == ("done", 3, 3, 3)
    assert run["config"]["limit"] == 3 and run["constitution_version_id"] == 1
    assert "run 1 sl done: 3/3" in out.err and "[info] chains 3/3" in out.err

    assert main(["chains", "list", *base, "--run", "1", "--json"]) == 0
    chains = json.loads(capsys.readouterr().out)
    assert [(c["prompt_id"], c["mode"], c["n_revisions"]) for c in chains] == [(1, "critique", 1), (2, "critique", 1),
                                                                              (3, "critique", 1)]
    assert main(["chains", "show", str(chains[0]["id"]), *base]) == 0
    text = capsys.readouterr().out
    assert text.startswith("chain 1  run 1  prompt 1  sample 0  mode critique  model tiny  constitution test@1\n")
    heads = [line.split("  flags:")[0].removesuffix(" ---") for line in text.splitlines() if line.startswith("--- ")]
    drawn = sl.draw_principles(sl.critique_principles(resolve_version(db, "test")["principles"]), 1, 0, 1)[0]
    assert heads == ["--- initial", f"--- critique 1 [{drawn['name']}]", f"--- revision 1 [{drawn['name']}]"]

    path = tmp_path / "sft.jsonl"
    assert main(["chains", "export", str(path), "--run", "1", *base, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert report["rows"] + report["skipped_empty"] == 3 and len(rows) == report["rows"]
    assert all(set(r) == {"prompt", "completion"} and r["prompt"].endswith("\n\nAssistant:") for r in rows)
    # Without --run: the newest SL run; a .parquet path writes Parquet with the same rows.
    assert main(["chains", "export", str(tmp_path / "sft.parquet"), *base, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"] == 1
    assert pd.read_parquet(tmp_path / "sft.parquet").to_dict("records") == rows

    assert main(["runs", "list", *base]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:4] == ["1", "sl", "done", "3/3"]
    assert main(["runs", "show", "1", *base]) == 0
    assert "[info] chains 3/3" in capsys.readouterr().out


@pytest.mark.timeout(180)
def test_cancel_then_resume_relaunches_the_worker(db, db_path, capsys):
    seed(db, n_prompts=2)
    run_id = runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="test", revisions=0,
                                          max_new_tokens=4))
    assert main(["runs", "cancel", str(run_id), "--db", str(db_path)]) == 0
    assert capsys.readouterr().out == f"run {run_id}: cancel requested (cancelled)\n"
    assert main(["runs", "resume", str(run_id), "--db", str(db_path), "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert (run["status"], run["done"], run["result"]["chains"]) == ("done", 2, 2)
    assert main(["runs", "resume", str(run_id), "--db", str(db_path)]) == 2
    assert capsys.readouterr().err == f"error: run {run_id} is done; only failed, cancelled or interrupted runs resume\n"
