"""The stage registry: a toy stage is one module + one registry line; both CLI doors take the same flags;
label and HHH runs report step-level progress (exact phases) through a scripted backend selected by name."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from cai import runs
from cai.backends.base import ScriptedBackend
from cai.cli import make_parser
from cai.cli.runs import config_values
from cai.config import MODELS, PROMPT_SETS, StageConfig, _f, refs, required
from cai.stages import REGISTRY, AgreementConfig, HHHConfig, LabelConfig, PairsConfig, Stage, register

HHH = "cai-paper/evals/HHH-dev-sample.jsonl"


# ----------------------------------------------------------------------------- a toy stage
@dataclass
class ToyConfig(StageConfig):
    kind: ClassVar[str] = "toy"
    prompts: str = _f("", "Prompt set to count.", ref=PROMPT_SETS, required="name a prompt set")
    model: str = _f("default", "Model that answers each prompt.", ref=MODELS, subject=True)
    batch_size: int = _f(2, "Prompts per backend call.", min=1)


def toy_run(ctx: runs.RunContext) -> dict[str, Any]:
    """Answer each prompt once, through the same resumable loop as the real stages."""
    from cai import data
    from cai.backends.base import SamplingParams

    cfg = ctx.config
    assert isinstance(cfg, ToyConfig)
    ctx.link(model=cfg.model)
    rows = data.list_prompts(ctx.db, cfg.prompts)
    answers: list[str] = []

    def build(backend: Any, chunk: list[dict[str, Any]], first: int) -> int:
        ctx.set_phase(f"prompts {first}-{first + len(chunk) - 1}")
        outs = backend.generate([r["text"] for r in chunk], SamplingParams(max_new_tokens=4))
        answers.extend(o.text for o in outs)
        ctx.step(len(chunk))
        return sum(o.completion_tokens for o in outs)

    ctx.work(rows, model=cfg.model, todo=rows, build=build, batches=cfg.batch_size, steps=lambda r: 1)
    return {"answers": answers}


TOY = Stage("toy", ToyConfig, "Toy stage", "a toy stage that answers each prompt once", toy_run)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(REGISTRY, "toy", TOY)  # the one registry line, undone after the test
    return TOY


def test_a_toy_stage_is_picked_up_by_the_cli_the_worker_the_dashboard_and_the_lineage(toy, db, capsys):
    from cai import data
    from ui import dashboard as D
    from ui import lineage

    with pytest.raises(SystemExit):
        make_parser().parse_args(["run", "toy", "--help"])
    out = capsys.readouterr().out
    assert "Start a run of a toy stage that answers each prompt once" in out
    assert "--prompts PROMPTS" in out and "--batch-size BATCH_SIZE" in out
    args = make_parser().parse_args(["run", "toy", "--prompts", "p", "--model", "m", "--batch-size", "1"])
    assert args.config_cls is ToyConfig and config_values(args) == {"prompts": "p", "model": "m", "batch_size": 1}

    data.create_prompt_set(db, "p", "red-team", ["\n\nHuman: a?\n\nAssistant:", "\n\nHuman: b?\n\nAssistant:",
                                                 "\n\nHuman: c?\n\nAssistant:"])  # fmt: skip
    backend = ScriptedBackend(respond=lambda prompt: " hi")
    with runs.scripted("toy-model", backend):
        run = runs.execute(db, runs.create_run(db, ToyConfig(prompts="p", model="toy-model")))
    assert (run["status"], run["result"], run["done"], run["total"]) == ("done", {"answers": [" hi"] * 3}, 3, 3)
    assert (run["steps_done"], run["steps_total"], run["phase"]) == (3, 3, "prompts 3-3")
    assert [len(c[1]) for c in backend.calls] == [2, 1]
    assert run["model_id"] == db.execute("select id from models where name = 'toy-model'").fetchone()[0]

    assert [f["name"] for f in D.form_fields("toy")] == ["prompts", "model", "batch_size"]
    assert D.config_from_form("toy", ["p", "m", "3"]) == ToyConfig(prompts="p", model="m", batch_size=3)
    assert D.fill_forms("toy", ["p", "m", "3"])[0] == "toy"
    assert lineage.input_fields("toy") == ([], [], ["model"])
    assert refs(ToyConfig) == {"prompts": "prompt_sets", "model": "models"}
    assert required(ToyConfig) == {"prompts": "name a prompt set"}


def test_register_is_the_one_line_and_every_real_stage_is_in_it():
    assert runs.REGISTRY is REGISTRY  # the worker reads the same dict object
    assert list(REGISTRY) == ["sl", "sft", "pairs", "label", "pm", "rl", "dpo", "hhh", "agreement",
                              "revision-scores", "temperature", "compare", "experiment", "discover", "pipeline"]
    for kind, stage in REGISTRY.items():
        assert stage.config.kind == kind and stage.label and stage.help and callable(stage.run)
    try:
        assert register(TOY) is TOY and REGISTRY["toy"] is TOY
    finally:
        del REGISTRY["toy"]


def test_a_run_of_an_unregistered_kind_is_refused(db):
    with pytest.raises(runs.RunError, match="unknown run kind 'toy'"):
        runs.create_run(db, ToyConfig(prompts="p"))


# ----------------------------------------------------------------------------- one door per stage
def _config(argv: list[str]) -> StageConfig:
    args = make_parser().parse_args(argv)
    return args.config_cls.from_dict(config_values(args))  # type: ignore[no-any-return]


def test_eval_and_run_take_the_same_flags_to_the_same_config():
    friendly = _config(["eval", "agreement", "--prefs", "h", "--feedback", "m", "--one-order",
                        "--principles", "harm", "kind", "--limit", "4"])
    canonical = _config(["run", "agreement", "--prefs", "h", "--feedback-model", "m", "--no-both-orders",
                         "--principles", "harm,kind", "--limit", "4"])
    assert friendly == canonical == AgreementConfig(prefs="h", feedback_model="m", both_orders=False,
                                                    principles="harm,kind", limit=4)
    assert _config(["run", "agreement", "--prefs", "h", "--feedback", "m", "--one-order"]) == \
        _config(["eval", "agreement", "--prefs", "h", "--feedback-model", "m", "--no-both-orders"])
    flags = ["--data", "x.jsonl", "--cot", "--samples", "3", "--cot-temperature", "0.5", "--clamp-low", "0.4",
             "--clamp-high", "0.6", "--tie-band", "0.02", "--inconsistent", "tie"]
    assert _config(["eval", "hhh", *flags]) == _config(["run", "hhh", *flags]) == HHHConfig(
        data="x.jsonl", cot=True, samples=3, cot_temperature=0.5, clamp_low=0.4, clamp_high=0.6, tie_band=0.02,
        inconsistent="tie")
    assert _config(["eval", "revisions", "--run", "3", "--pm", "p"]) == _config(
        ["run", "revision-scores", "--run", "3", "--pm", "p"])


def test_a_missing_required_flag_is_one_line_on_both_doors(db_path, capsys):
    from cai.cli import main

    assert main(["eval", "hhh", "--db", str(db_path)]) == 2
    assert capsys.readouterr().err == (
        "error: --data: give the HHH eval file (JSONL with prompt, corrects, incorrects)\n")
    assert main(["run", "agreement", "--db", str(db_path)]) == 2
    assert capsys.readouterr().err.startswith("error: --prefs: choose a human preference set")
    with pytest.raises(SystemExit):  # choices are argparse's, on both doors
        main(["eval", "agreement", "--prefs", "h", "--inconsistent", "maybe"])
    assert "invalid choice: 'maybe' (choose from 'average', 'tie')" in capsys.readouterr().err


# ----------------------------------------------------------------------------- step progress
def _phases(db, run_id: int, seen: list[tuple[str, int, int]]) -> Any:
    """What the run row says at the moment a backend call starts."""
    def at_call() -> None:
        row = db.execute("select phase, steps_done, steps_total from runs where id = ?", [run_id]).fetchone()
        if not seen or seen[-1] != tuple(row):
            seen.append(tuple(row))
    return at_call


def test_label_reports_each_backend_batch_as_a_step(db):
    from cai import constitution, data

    constitution.seed_default(db)
    data.create_prompt_set(db, "rt", "red-team", ["\n\nHuman: one?\n\nAssistant:", "\n\nHuman: two?\n\nAssistant:",
                                                  "\n\nHuman: three?\n\nAssistant:"])  # fmt: skip
    seen: list[tuple[str, int, int]] = []
    backend = ScriptedBackend(respond=lambda p: " yes")
    with runs.scripted("judge", backend):
        pairs_run = runs.execute(db, runs.create_run(db, PairsConfig(prompts="rt", model="judge")))["id"]
        label_run = runs.create_run(db, LabelConfig(pairs=pairs_run, feedback_model="judge", batch_size=2))
        at_call = _phases(db, label_run, seen)

        def score(prompt: str, option: str) -> float:
            at_call()
            return 0.0 if option == " (A)" else -math.log(3)

        backend.score = score
        row = runs.execute(db, label_run)
    assert row["status"] == "done"
    # 2 pairs per chunk, 2 readings (orders) per pair, 2 readings per backend call: steps are readings.
    assert seen == [("pairs 1-2 of 3: option log-probs", 0, 6), ("pairs 1-2 of 3: option log-probs", 2, 6),
                    ("pair 3 of 3: option log-probs", 4, 6)]
    assert (row["steps_done"], row["steps_total"], row["done"], row["total"]) == (6, 6, 3, 3)


def test_hhh_reports_chain_of_thought_and_readings_as_steps(db, shared):
    seen: list[tuple[str, int, int]] = []
    backend = ScriptedBackend(respond=lambda p: " Option (A) is honest.")
    with runs.scripted("judge", backend):
        run_id = runs.create_run(db, HHHConfig(data=str(shared / HHH), model="judge", cot=True, limit=3,
                                               batch_size=2))
        at_call = _phases(db, run_id, seen)
        backend.respond = lambda p: (at_call(), " Option (A) is honest.")[1]
        backend.score = lambda p, o: (at_call(), -1.0)[1]
        row = runs.execute(db, run_id)
    assert row["status"] == "done" and row["result"]["n"] == 3
    # Per comparison: 2 orders, each a CoT generation and a reading = 4 steps; 2 comparisons per chunk.
    assert seen == [("comparisons 1-2 of 3: chain of thought", 0, 12),
                    ("comparisons 1-2 of 3: option log-probs", 4, 12),
                    ("comparison 3 of 3: chain of thought", 8, 12),
                    ("comparison 3 of 3: option log-probs", 10, 12)]
    assert (row["steps_done"], row["steps_total"]) == (12, 12)
    assert row["tokens_per_s"] > 0  # the CoT tokens count


def test_hhh_cancel_is_checked_between_backend_batches(db, shared):
    backend = ScriptedBackend()
    with runs.scripted("judge", backend):
        run_id = runs.create_run(db, HHHConfig(data=str(shared / HHH), model="judge", cot=True, limit=4,
                                               batch_size=4))

        def respond(prompt: str) -> str:
            db["runs"].update(run_id, {"cancel_requested": 1})
            return " (A)"

        backend.respond = respond
        row = runs.execute(db, run_id)
    # The chunk's CoT call ran; its option read (the next backend call of the same chunk) did not.
    assert row["status"] == "cancelled" and [c[0] for c in backend.calls] == ["generate"]
    assert db["hhh_results"].count_where("run_id = ?", [run_id]) == 0


def test_the_spec_scripted_loads_a_fresh_scripted_backend(db):
    ctx = runs.RunContext(db, runs.create_run(db, PairsConfig(prompts="p")), PairsConfig(prompts="p"))
    backend = ctx.backend("scripted")
    assert isinstance(backend, ScriptedBackend) and backend is not ctx.backend("scripted")
    with runs.scripted("mine", backend):
        assert ctx.backend("mine") is backend
    assert "mine" not in runs.SCRIPTED


def test_the_cli_progress_line_names_the_step():
    from cai.cli.runs import progress_line

    run = {"id": 3, "kind": "label", "status": "running", "done": 2, "total": 8, "tokens_per_s": 41.27,
           "eta_s": 12.4, "steps_done": 5, "steps_total": 16, "phase": "pairs 3-4 of 8: option log-probs"}
    assert progress_line(run) == (
        "run 3 label running: 2/8  step 5/16 (pairs 3-4 of 8: option log-probs)  41.3 tok/s  ETA 12 s")
    assert progress_line({**run, "status": "done"}) == "run 3 label done: 2/8  41.3 tok/s"


def test_link_and_resume_record_inputs_and_skip_stored_items(db):
    config = HHHConfig(data="x.jsonl", model="judge")
    ctx = runs.RunContext(db, runs.create_run(db, config), config)
    row = ctx.link(model="judge")
    assert row is not None and db["runs"].get(ctx.run_id)["model_id"] == row["id"] == ctx.link(model="judge")["id"]
    for idx, option in ((1, "A"), (3, "B")):
        db["hhh_results"].insert({"run_id": ctx.run_id, "idx": idx, "correct_option": option, "p_plain": 1.0,
                                  "p_swapped": 1.0, "p_avg": 1.0, "meta": "{}"})
    items = [{"idx": i, "opt": o} for i, o in ((0, "A"), (1, "A"), (2, "B"), (3, "A"))]
    assert ctx.resume(items, lambda it: it["idx"], "hhh_results", "idx") == [items[0], items[2]]
    assert ctx.resume(items, lambda it: (it["idx"], it["opt"]), "hhh_results", ("idx", "correct_option")) == [
        items[0], items[2], items[3]]


def test_forms_say_which_choice_is_the_papers():
    """The paper labels with few-shot comparison prompts and fine-tunes a pretrained model on the revisions;
    the forms (and `cai run --help`, from the same metadata) say so beside the fields that choose."""
    from ui.dashboard import describe, form_fields

    lines = {(kind, f["name"]): describe(f) for kind in ("label", "sft") for f in form_fields(kind)}
    assert lines[("label", "few_shot")].startswith(
        "Few-shot comparison exemplars prepended (the constitution's, in order). The paper's choice: few-shot "
        "(its RLMadisonFewShotPrompts.json ships 5)")
    assert "The paper's choice: a pretrained (base) model fine-tuned on the revisions" in lines[("sft", "model")]
