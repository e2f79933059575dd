"""Models tab handlers: the registry view, registering (admin only) and a quick chat through a scripted backend."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from cai import models, users
from cai.backend_pool import BackendPool
from cai.backends.base import ScriptedBackend
from ui import models as M
from ui.common import AppContext

ADMIN, VIEWER = SimpleNamespace(username="ada"), SimpleNamespace(username="val")


@pytest.fixture
def ctx(db, db_path):
    users.add_user(db, "ada", "admin", "password1")
    users.add_user(db, "val", "viewer", "password1")
    models.ensure_model(db, "tiny")
    return AppContext(db_path)


def test_registry_and_register(ctx, tmp_path):
    folder = tmp_path / "models" / "sl-cai"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    # A folder that does not exist, holds no model, or lies outside the allowed roots is refused, all alike.
    assert M.register(ctx, "sl-cai", "/models/sl-cai", "hf", True, ADMIN) == (
        "Error: /models/sl-cai: not a model folder under the allowed roots ($CAI_MODEL_ROOTS)")
    assert M.register(ctx, "sl-cai", str(tmp_path), "hf", True, ADMIN) == (
        f"Error: {tmp_path}: not a model folder under the allowed roots ($CAI_MODEL_ROOTS)")
    assert M.register(ctx, "sl-cai", str(folder), "hf", True, ADMIN) == "Registered sl-cai as model #2"
    assert M.register(ctx, "sl-cai", "tiny", "hf", False, ADMIN) == (
        "Error: a model named &#x27;sl-cai&#x27; already exists")
    with pytest.raises(gr.Error, match="needs the admin role"):
        M.register(ctx, "other", "/x", "hf", False, VIEWER)
    frame, dropdown = M.registry(ctx, VIEWER)
    assert frame[["id", "name", "path", "chat"]].to_dict("records") == [
        {"id": 1, "name": "tiny", "path": "tiny", "chat": "no"},
        {"id": 2, "name": "sl-cai", "path": str(folder.resolve()), "chat": "yes"},
    ]
    assert dropdown.choices == [  # each model says what it is wherever it is chosen
        ("tiny — test model: random weights, output is noise, speed here not measured yet (#1)", 1),
        ("sl-cai — hf model, chat, speed here not measured yet (#2)", 2),
    ]
    assert "<b>Ancestry:</b> sl-cai" in M.show_lineage(ctx, 2, VIEWER)


def test_chat_sends_the_hh_transcript_and_cuts_at_the_next_turn(ctx):
    backend = ScriptedBackend(respond=lambda prompt: " Paris.\n\nHuman: and Spain?")
    pool = BackendPool(loader=lambda row: backend)
    history, box = M.chat(ctx, pool, 1, [], "Capital of France?", 32, 0.0, VIEWER)
    assert box == ""
    assert history == [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]
    history, _ = M.chat(ctx, pool, 1, history, "And of Italy?", 32, 0.0, VIEWER)
    assert backend.calls[-1] == ("generate", ["\n\nHuman: Capital of France?\n\nAssistant: Paris.\n\nHuman: And of "
                                              "Italy?\n\nAssistant:"])
    assert len(history) == 4
    with pytest.raises(gr.Error, match="Pick a model"):
        M.chat(ctx, pool, None, [], "hi", 32, 0.0, VIEWER)
    broken = BackendPool(loader=lambda row: (_ for _ in ()).throw(FileNotFoundError("no folder /nope")))
    with pytest.raises(gr.Error, match="Could not load tiny: no folder /nope"):
        M.chat(ctx, broken, 1, [], "hi", 32, 0.0, VIEWER)


def test_the_form_registers_model_folders_only_under_the_allowed_roots(ctx, tmp_path, monkeypatch):
    """#25.7: any folder with a config.json was accepted, and "missing" differed from "not a model"."""
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    (outside / "m").mkdir(parents=True)
    (outside / "m" / "config.json").write_text("{}")
    (tmp_path / "link").symlink_to(outside / "m")  # a link from an allowed root does not let it out
    refused = [M.register(ctx, "x", p, "hf", False, ADMIN)
               for p in (str(outside / "m"), str(outside / "nothere"), str(tmp_path / "link"))]
    assert refused == [f"Error: {p}: not a model folder under the allowed roots ($CAI_MODEL_ROOTS)"
                       for p in (outside / "m", outside / "nothere", tmp_path / "link")]
    monkeypatch.setenv("CAI_MODEL_ROOTS", str(outside))
    assert M.register(ctx, "x", str(outside / "m"), "hf", False, ADMIN) == "Registered x as model #2"
    assert models.validated_path(str(tmp_path / "link")) == str((outside / "m").resolve())  # the CLI: no roots


def test_register_served_and_endpoint_health(ctx):
    assert M.register(ctx, "srv", "", "served", False, ADMIN, "http://127.0.0.1:9/v1\n\nhttp://127.0.0.1:10") == (
        "Registered srv as model #2"
    )
    assert M.register(ctx, "none", "", "served", False, ADMIN, "") == (
        "Error: a served model needs at least one --endpoint URL"
    )
    frame = M.endpoint_health(ctx, VIEWER)
    assert frame[["model", "endpoint", "ok"]].to_dict("records") == [
        {"model": "srv", "endpoint": "http://127.0.0.1:9/v1", "ok": "no"},
        {"model": "srv", "endpoint": "http://127.0.0.1:10/v1", "ok": "no"},
    ]
    assert frame["detail"].str.startswith("ConnectError").all()


def test_the_registry_table_shows_each_embedded_models_role_and_the_alias(db):
    """#26: the Models tab says which role each embedded model is the default for, and what `default` is."""
    models.seed_embedded(db)
    models.register_model(db, "mine", "smollm2")  # the same weights under another name: no role
    frame = M.registry_frame(db)
    assert list(zip(frame["name"], frame["role"], strict=True)) == [
        ("smollm2", "feedback & HHH default"), ("gemma3-270m", "policy & chat default"),
        ("default", "alias of gemma3-270m"), ("tiny", ""), ("mine", "")]
