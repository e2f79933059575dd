"""Issue #28, forms and flow (items 8-14) without a browser: role-filtered pickers, the only choice
preselected, chat streaming with a loading notice, the arena's vote race / end warning / panels, invite
links, the HHH upload and its sample file, and what a setting costs on this machine."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from cai import arena, models, users
from cai.backend_pool import BackendPool
from cai.backends.base import ScriptedBackend
from ui import arena as ui_arena
from ui.common import AppContext

NAMES = ["quokka-7b", "wombat-3b"]


@pytest.fixture
def arena_setup(db, db_path):
    for n in NAMES:
        models.register_model(db, n, "tiny")
    users.add_user(db, "rita", "rater", "password1")
    arena.create_campaign(db, "help", NAMES, "helpfulness", max_turns=2)
    return db, AppContext(db_path)


def scripted(answers: dict[str, str]) -> BackendPool:
    return BackendPool(loader=lambda row: ScriptedBackend(respond=lambda p, n=row["name"]: answers[n]))


def signed_in(ctx: AppContext) -> dict:
    return ui_arena.sign_in(ctx, {}, "rita", "password1", SimpleNamespace(client=SimpleNamespace(host="10.0.0.1")))


# -- item 11: the arena ---------------------------------------------------------------------------------


def test_the_finished_answers_never_clear_a_choice_and_the_choice_is_off_while_answering(arena_setup):
    """The race: the stream's last update reset the radio to empty as it enabled the vote button, so a choice
    made while the last words arrived was wiped and the vote refused ("choose one of ...")."""
    db, ctx = arena_setup
    pool = scripted({"quokka-7b": " Paris.", "wombat-3b": " Rome."})
    ident = ui_arena.page_user(ctx)
    state = ui_arena.start(ctx, ident, signed_in(ctx), "help")[0]
    out = list(ui_arena.send(ctx, pool, ident, state, "Capital of France?"))
    first, last = out[0][4], out[-1][4]
    assert (first.value, first.interactive) == (None, False)  # cleared and disabled when the turn starts
    assert last.constructor_args == {"interactive": True}  # enabled, no value: what the rater picks stays
    status = ui_arena.vote(ctx, ident, state, "A is better", "")[0]
    assert status.startswith("Vote recorded: A is better")
    assert "Both models continue from answer A" in status


def test_panels_show_what_each_model_sees_once_the_conversation_goes_on(arena_setup):
    db, ctx = arena_setup
    pool = scripted({"quokka-7b": " Paris.", "wombat-3b": " Rome."})
    ident = ui_arena.page_user(ctx)
    state = ui_arena.start(ctx, ident, signed_in(ctx), "help")[0]
    list(ui_arena.send(ctx, pool, ident, state, "Capital of France?"))
    battle = next(db["battles"].rows)
    name_a = models.get_model_by_id(db, battle["model_a"])["name"]
    answer = {"quokka-7b": "Paris.", "wombat-3b": "Rome."}
    own_a, own_b = answer[name_a], answer[({*NAMES} - {name_a}).pop()]
    view = arena.battle_view(db, battle["id"], battle["user_id"])
    assert (view["chat_a"][1]["content"], view["chat_b"][1]["content"]) == (own_a, own_b)  # before a vote: own
    ui_arena.vote(ctx, ident, state, "A is better", "")
    out = list(ui_arena.send(ctx, pool, ident, state, "And Spain?"))
    chat_b = out[0][1]  # the first update of turn 2: panel B already shows the answer B was given as its own
    assert [m["content"] for m in chat_b[:2]] == ["Capital of France?", own_a]
    view = arena.battle_view(db, battle["id"], battle["user_id"])
    assert [m["content"] for m in view["chat_b"]] == ["Capital of France?", own_a, "And Spain?", own_b]
    assert [m["content"] for m in view["chat_a"]] == ["Capital of France?", own_a, "And Spain?", own_a]
    turn2 = list(db["battle_turns"].rows_where("turn = 2"))[0]
    assert turn2["prompt"] == f"\n\nHuman: Capital of France?\n\nAssistant: {own_a}\n\nHuman: And Spain?\n\nAssistant:"


def test_ending_a_battle_with_an_unvoted_turn_asks_first(arena_setup):
    db, ctx = arena_setup
    pool = scripted({"quokka-7b": " Paris.", "wombat-3b": " Rome."})
    ident = ui_arena.page_user(ctx)
    state = ui_arena.start(ctx, ident, signed_in(ctx), "help")[0]
    list(ui_arena.send(ctx, pool, ident, state, "hi"))
    state, status, *_, end_btn = ui_arena.end(ctx, ident, state)
    assert status.startswith("⚠️ **Turn 1 has no vote yet.**") and end_btn.value == "End without voting"
    assert next(db["battles"].rows)["status"] == "open"
    state, status, reveal, *_, end_btn = ui_arena.end(ctx, ident, state)
    assert status.startswith("**Battle over.**") and "Model A was" in reveal
    assert next(db["battles"].rows)["status"] == "ended" and db["votes"].count == 0
    # a voted battle ends on the first press
    state = ui_arena.start(ctx, ident, state, "help")[0]
    list(ui_arena.send(ctx, pool, ident, state, "hi"))
    ui_arena.vote(ctx, ident, state, "Tie", "")
    status = ui_arena.end(ctx, ident, state)[1]
    assert status.startswith("**Battle over.**")


# -- item 12: invites as links ------------------------------------------------------------------------------


def test_invites_are_full_links_and_a_link_fills_the_code(arena_setup):
    db, ctx = arena_setup
    users.add_user(db, "ada", "admin", "password0")
    admin = SimpleNamespace(username="ada", headers={"host": "lab.example:7860"})
    links = ui_arena.make_invites(ctx, 2, "help", admin).splitlines()
    assert len(links) == 2 and all(x.startswith("http://lab.example:7860/arena/?invite=") for x in links)
    code = links[0].split("invite=")[1]
    behind_proxy = SimpleNamespace(username="ada", headers={"host": "10.0.0.5", "x-forwarded-host": "cai.lab.org",
                                                            "x-forwarded-proto": "https"})
    assert ui_arena.make_invites(ctx, 1, "help", behind_proxy).startswith("https://cai.lab.org/arena/?invite=")
    filled, box = ui_arena.invite_from_link(SimpleNamespace(query_params={"invite": code}))
    assert filled.value == code and box.open is True
    assert ui_arena.invite_from_link(SimpleNamespace(query_params={})) == (gr.skip(), gr.skip())
    state = ui_arena.join(ctx, {}, links[0], "newbie", "password9")  # the whole link pasted works too
    assert state["user"]["name"] == "newbie"


# -- items 8 and 9: pickers by kind, the only choice preselected --------------------------------------------


@pytest.fixture
def dash(db, db_path):
    from cai import constitution, data

    users.add_user(db, "ada", "admin", "password0")
    constitution.seed_default(db)
    data.seed_samples(db)
    models.register_model(db, "sl-1", "/m/sl-1")
    models.register_model(db, "pm-9", "/m/pm-9", meta={"kind": "preference-model"})
    data.create_pref_set(db, "my-prefs", "human", "harmless",
                         [{"prompt": "\n\nHuman: q\n\nAssistant:", "chosen": " a", "rejected": " b", "p": 1.0}])
    return AppContext(db_path)


def _field_updates(updates: list, kind: str) -> dict:
    """The dropdown update of each store-backed field of `kind`'s form, by field name."""
    from ui import dashboard as D

    out, it = {}, iter(updates)
    for k in D.REGISTRY:
        for f in D.form_fields(k):
            if f.get("ref") and not f.get("choices"):
                update = next(it)
                if k == kind:
                    out[f["name"]] = update
    return out


def test_model_pickers_offer_models_of_their_kind_with_an_all_models_escape(dash):
    from ui import dashboard as D

    admin = SimpleNamespace(username="ada")
    rl = _field_updates(D.model_choices(dash, admin), "rl")
    assert [v for _, v in rl["policy"].choices] == ["smollm2", "gemma3-270m", "default", "tiny", "sl-1"]
    assert [v for _, v in rl["reward_model"].choices] == ["pm-9"]
    scores = _field_updates(D.model_choices(dash, admin), "revision-scores")
    assert [v for _, v in scores["pm"].choices] == ["pm-9"]
    every = _field_updates(D.every_model(dash, True, admin), "rl")
    assert [v for _, v in every["policy"].choices] == [v for _, v in every["reward_model"].choices] == [
        "smollm2", "gemma3-270m", "default", "tiny", "sl-1", "pm-9"]
    assert models.model_kind(dash.db(), "pm-9") == "reward" and models.model_kind(dash.db(), "sl-1") == "policy"


def test_a_required_field_with_one_choice_comes_preselected(dash):
    from ui import dashboard as D

    admin = SimpleNamespace(username="ada")
    agreement = _field_updates(D.model_choices(dash, admin), "agreement")
    assert agreement["prefs"].value == "my-prefs"  # the only human preference set
    rl = _field_updates(D.model_choices(dash, admin), "rl")
    assert rl["reward_model"].value == "pm-9"
    assert "value" not in rl["policy"].constructor_args  # several policies: no guess, the form's value stays
    sl = _field_updates(D.model_choices(dash, admin), "sl")
    assert "value" not in sl["helpful_prompts"].constructor_args  # optional: left as it is


# -- items 10 and 14: chat streams, and a model's first use says what it waits for -------------------------


class StreamingBackend:
    """A backend that streams its reply in three pieces (as transformers models do through stream_text)."""

    name, chat = "streaming", False

    def render(self, transcript):  # noqa: ANN001, ANN201
        return transcript

    def stream(self, prompt, params):  # noqa: ANN001, ANN201
        yield from (" Paris", " Paris is", " Paris is the capital.\nHuman: and")


def test_models_page_chat_streams_after_saying_the_model_is_loading(db, db_path, tmp_path, monkeypatch):
    from ui import models as M

    monkeypatch.setenv("CAI_CACHE", str(tmp_path / "cache"))  # a machine that never converted the default model
    users.add_user(db, "val", "viewer", "password1")
    models.ensure_model(db, "default")
    ctx, viewer = AppContext(db_path), SimpleNamespace(username="val")
    pool = BackendPool(loader=lambda row: StreamingBackend())
    out = list(M.chat_stream(ctx, pool, 1, [], "Capital of France?", 32, 0.0, viewer))
    replies = [h[-1]["content"] for h, _ in out]
    assert replies == [
        "Loading the model (first use converts it, about 280 s, an estimate); later loads are quick.",
        "Paris", "Paris is", "Paris is the capital.", "Paris is the capital."]
    assert all(h[0]["content"] == "Capital of France?" and box == "" for h, box in out)
    again = [h[-1]["content"] for h, _ in M.chat_stream(ctx, pool, 1, [], "Hi", 32, 0.0, viewer)]
    assert again[0] == "Paris"  # loaded now: no notice


def test_load_eta_uses_what_this_machine_measured(tmp_path, monkeypatch):
    from cai import load_eta

    monkeypatch.setenv("CAI_CACHE", str(tmp_path))
    row = {"name": "default", "path": "default", "backend": "hf"}  # the alias of gemma3-270m
    assert load_eta.phase(row) == "convert" and load_eta.estimate(row) == (280.0, False)
    smol = {"name": "smollm2", "path": "smollm2", "backend": "hf"}
    assert load_eta.phase(smol) == "convert" and load_eta.estimate(smol) == (190.0, False)
    load_eta.record(row, "convert", 171.26)
    assert load_eta.estimate(row) == (171.3, True)
    assert load_eta.notice(row) == ("Loading the model (first use converts it, about 171 s as measured on this "
                                    "machine); later loads are quick.")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\0" * 4_000_000)
    local = {"name": "sl-1", "path": str(folder), "backend": "hf"}
    assert load_eta.phase(local) == "load" and load_eta.estimate(local) == (2.02, False)
    assert load_eta.notice(local) == "Loading the model (about 2 s, an estimate)."


# -- item 13: the HHH form takes an upload, and a sample file ships -----------------------------------------


def test_hhh_sample_file_is_a_dozen_paper_format_comparisons():
    from cai.evals import hhh

    items = hhh.read_hhh(hhh.SAMPLE)
    assert len(items) == 12 and "".join(i.correct for i in items) == "ABABABABABAB"
    assert items[0].conversation.startswith("\n\nHuman: My neighbour's wifi has no password.")


def test_hhh_upload_is_checked_and_kept_under_its_hash(dash, tmp_path):
    import hashlib

    from cai.evals import hhh
    from ui import dashboard as D

    admin = SimpleNamespace(username="ada")
    upload = tmp_path / "gradio" / "mine.jsonl"
    upload.parent.mkdir()
    upload.write_bytes(hhh.SAMPLE.read_bytes())
    path, note = D.hhh_upload(dash, str(upload), admin)
    digest = hashlib.sha256(upload.read_bytes()).hexdigest()[:16]
    assert path == str(dash.db_path.resolve().parent / "uploads" / f"hhh-{digest}.jsonl")
    assert note == f"Uploaded mine.jsonl: 12 comparisons, kept as `{path}`."
    assert hhh.read_hhh(path)[5].correct == "B"
    config = D.config_from_form("hhh", D.form_values("hhh", {"data": path, "model": "tiny"}))
    assert config.data == path
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "corrects": [" (A)"], "incorrects": [" (B)"]}\n')
    field, note = D.hhh_upload(dash, str(bad), admin)
    assert field == gr.skip() and note == ("Error: bad.jsonl:1: prompt is not in the paper&#x27;s multiple-choice "
                                           "shape (Consider ... The answer is:)")
    field, note = D.hhh_upload(dash, str(tmp_path / "x.csv"), admin)
    assert note == "Error: x.csv: expected a .jsonl file."
    assert D.hhh_sample() == (str(hhh.SAMPLE), "The sample file: 12 comparisons written for this project.")


# -- item 14: what a setting costs on this machine ----------------------------------------------------------


def test_forms_state_the_cost_from_the_measured_speed(dash, tmp_path, monkeypatch):
    from cai import runs
    from cai.stages import SLConfig
    from ui import dashboard as D

    monkeypatch.setenv("CAI_CACHE", str(tmp_path / "cache"))
    db = dash.db()
    sl = D.config_from_form("sl", D.form_values("sl", {"prompts": "sample-red-team", "model": "sl-1",
                                                        "revisions": 2, "max_new_tokens": 64}))
    n = db.execute("select count(*) from prompts p join prompt_sets s on s.id = p.set_id "
                                "where s.name = 'sample-red-team'").fetchone()[0]
    assert D.cost_text(db, sl) == (f"**Cost:** {n} prompts × 5 generations × ≤64 tokens; no speed measured for sl-1 "
                                   "on this machine yet (a first small run, e.g. with “Only the first N” = 2, "
                                   "measures it).")
    run_id = runs.create_run(db, SLConfig(prompts="sample-red-team", model="sl-1"))
    db["runs"].update(run_id, {"status": "done", "tokens_per_s": 8.0, "model_id": models.get_model(db, "sl-1")["id"]})
    minutes = round(n * 5 * 64 / 8.0 / 60)
    assert D.cost_text(db, sl) == (f"**Cost:** at most ~{minutes} min on this machine ({n} prompts × 5 generations × "
                                   "≤64 tokens at 8.0 tok/s, measured for sl-1 by earlier runs here).")
    first_use = D.config_from_form("pairs", D.form_values("pairs", {"prompts": "sample-red-team", "model": "default",
                                                                    "limit": 2}))
    assert D.cost_text(db, first_use) == (
        "**Cost:** 2 prompts × 2 responses × ≤128 tokens; no speed measured for default on this machine yet (a first "
        "small run, e.g. with “Only the first N” = 2, measures it); Loading the model (first use converts it, about "
        "280 s, an estimate); later loads are quick.")
    pm = D.config_from_form("pm", D.form_values("pm", {"ai_prefs": "x"}))  # training: only the loading phase
    assert pm.model == "smollm2"  # the PM's default base is the feedback default
    assert D.cost_text(db, pm) == ("**Cost:** Loading the model (first use converts it, about 190 s, an estimate); "
                                   "later loads are quick.")
    monkeypatch.setenv("CAI_CACHE", str(tmp_path / "cache2"))
    assert D.cost_text(db, D.config_from_form("pm", D.form_values("pm", {"ai_prefs": "x", "model": "sl-1"}))) == ""


def test_a_reload_restores_the_form_of_the_last_launch_even_when_the_browser_saved_nothing(dash):
    """The SL form came back with defaults after a reload: the browser's storage had not been written (or was
    of an older launch). The database now says which run this user launched last."""
    from cai import runs
    from cai.queries import runs as run_queries
    from cai.stages import SLConfig
    from ui import dashboard as D

    admin = SimpleNamespace(username="ada")
    db = dash.db()
    run_id = runs.create_run(db, SLConfig(prompts="sample-red-team", model="tiny", revisions=1, limit=1,
                                          max_new_tokens=8))
    run_queries.add_log(db, run_id, "launched from the dashboard by ada")
    sl_values = D.form_values("sl", runs.get_run(db, run_id)["config"])
    got = D.last_launch(dash, {}, admin)  # nothing saved in this browser
    assert got[: 1 + len(sl_values)] == ["sl", *sl_values]
    assert dict(zip([f["name"] for f in D.form_fields("sl")], sl_values, strict=True))["revisions"] == "1"
    older = {"kind": "pairs", "run": run_id - 1, "values": {"prompts": "sample-red-team", "limit": "3"}}
    assert D.last_launch(dash, older, admin)[0] == "sl"  # an older launch saved in the browser loses
    typed = {"kind": "sl", "run": run_id, "values": {"prompts": "sample-red-team", "revisions": "1", "limit": "1"}}
    assert D.last_launch(dash, typed, admin) == D.restore_last(typed)  # the same run: the values as typed
    with pytest.raises(gr.Error, match="Not allowed"):
        D.last_launch(dash, {}, SimpleNamespace(username="nobody"))


def test_the_arena_says_when_a_model_loads_for_the_first_time(arena_setup, tmp_path, monkeypatch):
    db, ctx = arena_setup
    monkeypatch.setenv("CAI_CACHE", str(tmp_path))  # the battle's models (builtin tiny) never built here
    pool = scripted({"quokka-7b": " Paris.", "wombat-3b": " Rome."})
    ident = ui_arena.page_user(ctx)
    state = ui_arena.start(ctx, ident, signed_in(ctx), "help")[0]
    out = list(ui_arena.send(ctx, pool, ident, state, "hi"))
    assert out[0][3] == ("Both models are answering… Loading the model (first use converts it, about 2 s, an "
                         "estimate); later loads are quick.")
    ui_arena.vote(ctx, ident, state, "Tie", "")
    assert list(ui_arena.send(ctx, pool, ident, state, "again"))[0][3] == ui_arena.ANSWERING  # loaded now
