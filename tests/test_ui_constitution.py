"""Constitution tab handlers: edits make versions, roles are enforced, diffs escape, import/export, preview."""

from __future__ import annotations

import json
from types import SimpleNamespace

import gradio as gr
import pytest

from cai import constitution, users
from ui import constitution as T
from ui.common import AppContext

ADMIN, VIEWER = SimpleNamespace(username="ada"), SimpleNamespace(username="val")


@pytest.fixture
def ctx(db, db_path):
    users.add_user(db, "ada", "admin", "password1")
    users.add_user(db, "val", "viewer", "password1")
    constitution.create_constitution(
        db, "mini",
        principles=[
            {"kind": "critique", "name": "harm", "critique": "Is it harmful?", "revision": "Make it harmless."},
            {"kind": "comparison", "name": "kinder", "text": "Which response is kinder?"},
        ],
        exemplars=[{"kind": "critique", "data": "\n\nHuman: hi\n\nAssistant: yo\n\nCritiqueRequest: Rude?"
                    "\n\nCritique: A bit.\n\nRevisionRequest: Fix.\n\nRevision: Hello!"}],
    )
    return AppContext(db_path)


def test_save_edit_disable_delete_each_make_a_version(ctx):
    status, v = T.save_principle(ctx, "mini", "harm", "critique", "harm", "Is it dangerous?", "Make it safe.", "",
                                 True, "sharper wording", ADMIN)
    assert (status, v) == ("Saved as mini v2: sharper wording (by ada)", 2)
    got = constitution.resolve_version(ctx.db(), "mini")
    assert got["principles"][0]["critique"] == "\n\nCritiqueRequest: Is it dangerous?\n\nCritique:"
    status, v = T.save_principle(ctx, "mini", "", "comparison", "honest", "", "", "Which is more honest?", True, "",
                                 ADMIN)
    assert (status, v) == ("Saved as mini v3: add comparison principle &#x27;honest&#x27; (by ada)", 3)
    assert T.change_principle(ctx, "disable", "mini", "harm", "", ADMIN) == (
        "Disabled harm: now mini v4", 4)
    assert T.change_principle(ctx, "delete", "mini", "kinder", "", ADMIN)[1] == 5
    final = constitution.resolve_version(ctx.db(), "mini")
    assert [(p["name"], p["enabled"]) for p in final["principles"]] == [("harm", False), ("honest", True)]
    assert [v["note"] for v in constitution.list_versions(ctx.db(), "mini")] == [
        "created", "sharper wording (by ada)", "add comparison principle 'honest' (by ada)",
        "disable 'harm' (by ada)", "delete 'kinder' (by ada)",
    ]


def test_invalid_edits_are_rejected_inline_and_store_nothing(ctx):
    status, v = T.save_principle(ctx, "mini", "", "critique", "harm", "dup", "dup", "", True, "", ADMIN)
    assert v is None and status.startswith("Not saved: two principles are named")
    status, v = T.save_principle(ctx, "mini", "", "critique", "", "x", "y", "", True, "", ADMIN)
    assert v is None and "a principle needs a name" in status
    assert len(constitution.list_versions(ctx.db(), "mini")) == 1


def test_viewers_cannot_edit(ctx):
    with pytest.raises(gr.Error, match="needs the admin role; you are val \\(viewer\\)"):
        T.save_principle(ctx, "mini", "harm", "critique", "harm", "a", "b", "", True, "", VIEWER)
    with pytest.raises(gr.Error, match="needs the admin role"):
        T.change_principle(ctx, "delete", "mini", "harm", "", VIEWER)
    with pytest.raises(gr.Error, match="needs the admin role"):
        T.import_upload(ctx, "/nonexistent.json", "", VIEWER)
    assert len(constitution.list_versions(ctx.db(), "mini")) == 1


def test_load_and_side_by_side_diff_escapes(ctx):
    T.save_principle(ctx, "mini", "harm", "critique", "harm", "Is it <b>harmful</b> now?", "Make it harmless.", "",
                     True, "", ADMIN)
    out = T.load(ctx, "mini", None, VIEWER)
    assert out[1].value == 2 and list(out[2]["v"]) == [2, 1]
    assert list(out[3]["name"]) == ["harm", "kinder"]
    assert out[7] == "**constitution mini v2** · edit &#x27;harm&#x27; (by ada)"
    html = T.compare(ctx, "mini", 1, 2, VIEWER)
    assert "<b>harmful</b>" not in html
    assert "<ins>&lt;b&gt;harmful&lt;/b&gt; now?</ins>" in html
    assert "<del>harmful?</del>" in html
    assert T.compare(ctx, "mini", 2, 2, VIEWER) == "<p>Versions 2 and 2 have the same principles and exemplars.</p>"


def test_preview_shows_the_exact_prompts(ctx):
    text = T.preview(ctx, "mini", None, "harm", "\n\nHuman: hi?\n\nAssistant: go away", "", "", 0, False, VIEWER)
    assert text == (
        "=== critique prompt ===\n\n\nHuman: hi?\n\nAssistant: go away\n\nCritiqueRequest: Is it harmful?\n\nCritique:"
        "\n\n=== revision prompt ===\n\n\nHuman: hi?\n\nAssistant: go away\n\nCritiqueRequest: Is it harmful?"
        "\n\nCritique: <the model's critique goes here>\n\nRevisionRequest: Make it harmless.\n\nRevision:"
    )
    with_shot = T.preview(ctx, "mini", None, "harm", "\n\nHuman: hi?\n\nAssistant: go away", "", "", 1, False, VIEWER)
    assert with_shot.count("CritiqueRequest:") == 4
    comp = T.preview(ctx, "mini", None, "kinder", "\n\nHuman: hi?\n\nAssistant:", "Hello!", "Go away.", 0, False,
                     VIEWER)
    assert comp == (
        "\n\nConsider the following conversation between a human and an assistant:\n\nHuman: hi?\n\n"
        "\nWhich response is kinder? Options:\n (A) [[[Hello!]]]\n (B) [[[Go away.]]]\n\nThe answer is:"
    )
    assert T.preview(ctx, "mini", None, "nope", "x", "", "", 0, False, VIEWER) == (
        "error: version 1 has no principle named 'nope'")


def test_import_export_round_trip_and_bad_files(ctx, tmp_path):
    path = T.export_file(ctx, "mini", None, "cai", "", VIEWER)
    data = json.loads(open(path, encoding="utf-8").read())
    assert data["format"] == "cai" or data["format"] == constitution.FORMAT
    data["principles"][0]["critique"] = "Is it hurtful?"
    upload = tmp_path / "mini.json"
    upload.write_text(json.dumps(data), encoding="utf-8")
    status, name = T.import_upload(ctx, str(upload), "mini", ADMIN)
    assert (status, name) == ("Imported 3 items (cai) as mini v2", "mini")
    paper = T.export_file(ctx, "mini", None, "paper", "comparison", VIEWER)
    assert json.loads(open(paper, encoding="utf-8").read()) == ["\nWhich response is kinder? Options:"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "cai-constitution", "principles": [}', encoding="utf-8")
    status, name = T.import_upload(ctx, str(bad), "mini", ADMIN)
    assert name == "" and status.startswith("Import failed: bad.json:1: not valid JSON")
    with pytest.raises(gr.Error, match="expected a .json file"):
        T.import_upload(ctx, str(tmp_path / "x.txt"), "", ADMIN)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (5 * 1024 * 1024 + 1))
    with pytest.raises(gr.Error, match="big.json: 5.2 MB is over the 5 MB upload limit"):
        T.import_upload(ctx, str(big), "", ADMIN)
    assert len(constitution.list_versions(ctx.db(), "mini")) == 2


def test_rename_keeps_position_and_writes_one_version(ctx):
    status, v = T.save_principle(ctx, "mini", "kinder", "comparison", "gentler", "", "", "Which is gentler?", True, "",
                                 ADMIN)
    assert (status, v) == ("Saved as mini v2: rename &#x27;kinder&#x27; to &#x27;gentler&#x27; (by ada)", 2)
    got = constitution.resolve_version(ctx.db(), "mini")
    assert [(p["name"], p["text"]) for p in got["principles"]] == [
        ("harm", ""), ("gentler", "\nWhich is gentler? Options:")]
