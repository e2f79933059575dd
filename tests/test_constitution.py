"""Constitution store (versions, edits, diff, restore), paper/cai import-export, and the prompt templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai import constitution as C
from cai import prompts as P
from cai.data import DataError
from cai.transcript import split_pair

PAPER = {
    "CritiqueRevisionInstructions.json": "critique",
    "RLMadisonInstructions.json": "comparison",
    "CritiqueRevisionFewShotPrompts.json": "critique-exemplars",
    "RLMadisonFewShotPrompts.json": "comparison-exemplars",
    "RLMadisonPrecogFewShotPrompts.json": "comparison-cot-exemplars",
}

CRIT = {"kind": "critique", "name": "c1", "critique": "Find harm.", "revision": "Remove harm."}
COMP = {"kind": "comparison", "name": "k1", "text": "Choose the kinder reply."}


def counts(db) -> dict[str, int]:
    return {t: db[t].count for t in ("constitutions", "constitution_versions", "principles", "exemplars")}


# ----------------------------------------------------------------------------- default constitution


def test_seed_default_installs_our_constitution_once(db):
    v = C.seed_default(db)
    assert (v["name"], v["version"], v["note"]) == ("default", 1, "import constitution.json (cai)")
    kinds = [p["kind"] for p in v["principles"]]
    assert (kinds.count("critique"), kinds.count("comparison")) == (18, 17)
    assert [e["kind"] for e in v["exemplars"]].count("critique") == 4
    assert [e["kind"] for e in v["exemplars"]].count("comparison") == 4
    assert [e["kind"] for e in v["exemplars"]].count("comparison_cot") == 3
    assert all(p["enabled"] for p in v["principles"])
    first = v["principles"][0]
    assert first == {
        "id": first["id"],
        "position": 0,
        "kind": "critique",
        "name": "harm",
        "critique": "\n\nCritiqueRequest: Point out every way the assistant's last reply could hurt the person "
        "asking or anyone else, whether physically, emotionally, financially or socially.\n\nCritique:",
        "revision": "\n\nRevisionRequest: Rewrite the assistant's reply so that nothing in it could hurt the "
        "person or anyone else, while still helping with whatever is safe to help with.\n\nRevision:",
        "text": "",
        "enabled": True,
        "alternatives": [],
    }
    assert C.seed_default(db)["id"] == v["id"]
    assert counts(db)["constitution_versions"] == 1


def test_default_is_in_our_own_words_and_covers_the_ground(db, shared):
    v = C.seed_default(db)
    prompts_dir = shared / "cai-paper" / "prompts"
    paper_texts = {
        t
        for e in json.loads((prompts_dir / "CritiqueRevisionInstructions.json").read_text()).values()
        for t in [*e["prompt"], e["edit_request"]]
    }
    paper_texts |= set(json.loads((prompts_dir / "RLMadisonInstructions.json").read_text()))
    ours = [t for p in v["principles"] for t in (p["critique"], p["revision"], p["text"]) if t]
    assert not paper_texts & set(ours)
    names = {p["name"] for p in v["principles"]}
    for topic in (
        "harm",
        "ethics",
        "legality",
        "bias",
        "age-appropriate",
        "empathy",
        "non-evasive",
        "not-preachy",
        "harmless-not-preachy",
        "calm",
        "fair",
        "family-friendly",
        "direct",
    ):
        assert topic in names, topic


def test_default_exemplars_have_the_paper_shapes(db):
    v = C.seed_default(db)
    crit = [e["data"] for e in v["exemplars"] if e["kind"] == "critique"]
    for text in crit:
        assert text.startswith("\n\nHuman: ")
        order = [
            text.index(tag)
            for tag in (
                "\n\nAssistant:",
                "\n\nCritiqueRequest:",
                "\n\nCritique:",
                "\n\nRevisionRequest:",
                "\n\nRevision:",
            )
        ]
        assert order == sorted(order)
    comp = [e["data"] for e in v["exemplars"] if e["kind"] == "comparison"]
    assert all(
        list(d) == ["prompt", "corrects", "incorrects"] and d["prompt"].endswith("\n\nAssistant:")
        for d in comp
    )
    cot = [e["data"]["prompt"] for e in v["exemplars"] if e["kind"] == "comparison_cot"]
    assert all(
        t.count("{}") == 1 and "Let's think step by step:" in t and t.endswith(("(A)", "(B)")) for t in cot
    )


# ----------------------------------------------------------------------------- paper formats


@pytest.mark.parametrize("filename", list(PAPER))
def test_paper_file_round_trip_is_byte_exact(db, shared, tmp_path, filename):
    src = shared / "cai-paper" / "prompts" / filename
    raw = src.read_text(encoding="utf-8")
    assert json.dumps(json.loads(raw)) == raw
    v = C.import_file(db, src)
    assert v["name"] == src.stem
    assert v["imported"]["format"] == PAPER[filename]
    out = C.export(db, tmp_path / filename, "paper", PAPER[filename])
    assert out.read_bytes() == src.read_bytes()


def test_all_paper_files_into_one_constitution(db, shared, tmp_path):
    for filename in PAPER:
        C.import_file(db, shared / "cai-paper" / "prompts" / filename, into="paper")
    v = C.resolve_version(db, "paper")
    assert v["version"] == 5
    assert [p["name"] for p in v["principles"]][:3] == ["harmful0", "harmful1", "harmful2"]
    assert [p["name"] for p in v["principles"]][16:18] == ["comparison0", "comparison1"]
    assert [e["kind"] for e in v["exemplars"]].count("comparison_cot") == 6
    # Importing the critique file again replaces only the critique principles.
    again = C.import_file(
        db, shared / "cai-paper" / "prompts" / "CritiqueRevisionInstructions.json", into="paper"
    )
    assert C.diff(v, again) == []
    for filename, kind in PAPER.items():
        out = C.export(db, tmp_path / filename, "paper", kind, "paper")
        assert out.read_bytes() == (shared / "cai-paper" / "prompts" / filename).read_bytes(), filename


def test_several_critiques_for_one_revision_round_trip(db, tmp_path):
    obj = {
        "multi": {
            "prompt": ["\n\nCritiqueRequest: A?\n\nCritique:", "\n\nCritiqueRequest: B?\n\nCritique:"],
            "edit_request": "\n\nRevisionRequest: Fix.\n\nRevision:",
        },
        "single": {
            "prompt": ["\n\nCritiqueRequest: C?\n\nCritique:"],
            "edit_request": "\n\nRevisionRequest: Fix C.\n\nRevision:",
        },
    }
    src = tmp_path / "multi.json"
    src.write_text(json.dumps(obj))
    v = C.import_file(db, src)
    assert v["principles"][0]["critique"] == "\n\nCritiqueRequest: A?\n\nCritique:"
    assert v["principles"][0]["alternatives"] == ["\n\nCritiqueRequest: B?\n\nCritique:"]
    out = C.export(db, tmp_path / "out.json", "paper", "critique")
    assert out.read_text() == json.dumps(obj)


def test_detect_format():
    assert C.detect_format({"format": "cai-constitution"}) == "cai"
    assert C.detect_format({"x": {"prompt": [], "edit_request": ""}}) == "critique"
    assert C.detect_format(["\nChoose. Options:"]) == "comparison"
    assert C.detect_format(["\n\nHuman: a\n\nCritiqueRequest: b"]) == "critique-exemplars"
    assert C.detect_format([{"prompt": "p", "corrects": [], "incorrects": []}]) == "comparison-exemplars"
    assert C.detect_format([{"prompt": "{}"}]) == "comparison-cot-exemplars"
    with pytest.raises(DataError, match="unrecognised constitution file"):
        C.detect_format([1, 2])


def test_cai_format_round_trip(db, tmp_path):
    v = C.seed_default(db)
    C.disable_principle(db, "default", "bias")
    out = C.export(db, tmp_path / "c.json", "cai")
    copy = C.import_file(db, out, into="copy")
    assert C.diff(C.resolve_version(db, "default"), copy) == []
    assert not next(p for p in copy["principles"] if p["name"] == "bias")["enabled"]
    # The paper export leaves disabled principles out.
    paper = json.loads(C.export(db, tmp_path / "p.json", "paper", "critique", "default").read_text())
    assert "bias" not in paper and len(paper) == 17
    assert v["version"] == 1


def test_export_needs_a_kind_for_the_paper_format(db, tmp_path):
    C.seed_default(db)
    with pytest.raises(DataError, match="one kind per file"):
        C.export(db, tmp_path / "x.json", "paper")
    with pytest.raises(DataError, match="--kind must be one of"):
        C.export(db, tmp_path / "x.json", "paper", "everything")


# ----------------------------------------------------------------------------- versions


def test_every_edit_is_a_new_version_with_a_note(db):
    C.create_constitution(db, "mine", "test", [CRIT, COMP])
    C.disable_principle(db, "mine", "c1")
    C.enable_principle(db, "mine", "c1")
    C.edit_principle(db, "mine", "k1", text="Choose the calmer reply.")
    C.add_principle(db, "mine", {"kind": "comparison", "name": "k2", "text": "Pick the honest one."})
    C.delete_principle(db, "mine", "k1")
    notes = [
        (v["version"], v["note"], v["critique"], v["comparison"], v["disabled"])
        for v in C.list_versions(db, "mine")
    ]
    assert notes == [
        (1, "created", 1, 1, 0),
        (2, "disable principle 'c1'", 1, 1, 1),
        (3, "enable principle 'c1'", 1, 1, 0),
        (4, "edit principle 'k1': text", 1, 1, 0),
        (5, "add comparison principle 'k2'", 1, 2, 0),
        (6, "delete principle 'k1'", 1, 1, 0),
    ]
    # Old versions are untouched.
    assert C.resolve_version(db, "mine", 1)["principles"][1]["text"] == "\nChoose the kinder reply. Options:"
    assert C.resolve_version(db, "mine", 2)["principles"][0]["enabled"] is False


def test_diff_is_field_level(db):
    C.create_constitution(db, "mine", "", [CRIT, COMP])
    C.edit_principle(db, "mine", "c1", revision="Remove all harm.")
    C.add_principle(db, "mine", {"kind": "comparison", "name": "k2", "text": "Pick B."})
    assert C.diff_versions(db, "mine", 1, 2) == [
        {
            "change": "changed",
            "target": "principle",
            "kind": "critique",
            "name": "c1",
            "fields": {
                "revision": {
                    "before": "\n\nRevisionRequest: Remove harm.\n\nRevision:",
                    "after": "\n\nRevisionRequest: Remove all harm.\n\nRevision:",
                }
            },
        }
    ]
    added = C.diff_versions(db, "mine", 2, 3)
    assert [(d["change"], d["name"], d["fields"]["text"]) for d in added] == [
        ("added", "k2", {"before": None, "after": "\nPick B. Options:"})
    ]
    removed = C.diff_versions(db, "mine", 3, 1)
    assert [(d["change"], d["name"]) for d in removed] == [("changed", "c1"), ("removed", "k2")]


def test_restore_makes_a_new_version_copying_the_old(db):
    C.create_constitution(db, "mine", "", [CRIT, COMP])
    C.delete_principle(db, "mine", "c1")
    r = C.restore_version(db, "mine", 1)
    assert (r["version"], r["note"]) == (3, "restore version 1")
    assert r["parent_id"] == C.resolve_version(db, "mine", 1)["id"]
    assert C.diff_versions(db, "mine", 1, 3) == []
    assert [v["version"] for v in C.list_versions(db, "mine")] == [1, 2, 3]


def test_resolve_version_defaults_to_most_recently_changed(db):
    C.create_constitution(db, "a", "", [CRIT])
    C.create_constitution(db, "b", "", [COMP])
    assert C.resolve_version(db)["name"] == "b"
    C.disable_principle(db, "a", "c1")
    v = C.resolve_version(db)
    assert (v["name"], v["version"]) == ("a", 2)
    assert C.version_by_id(db, v["id"])["version"] == 2
    assert [c["name"] for c in C.list_constitutions(db)] == ["a", "b"]
    with pytest.raises(LookupError, match="no constitution named 'zzz'"):
        C.resolve_version(db, "zzz")
    with pytest.raises(LookupError, match="has no version 9"):
        C.resolve_version(db, "a", 9)


def test_empty_store_says_run_init(db):
    with pytest.raises(LookupError, match="cai init"):
        C.resolve_version(db)


def test_invalid_principles_are_refused_and_nothing_written(db):
    C.create_constitution(db, "mine", "", [CRIT])
    before = counts(db)
    with pytest.raises(DataError, match="two principles are named 'c1'"):
        C.add_principle(db, "mine", {**CRIT})
    with pytest.raises(DataError, match="field 'revision' is empty"):
        C.add_principle(db, "mine", {"kind": "critique", "name": "x", "critique": "a", "revision": " "})
    with pytest.raises(DataError, match="kind must be one of critique, comparison"):
        C.add_principle(db, "mine", {"kind": "rule", "name": "x"})
    with pytest.raises(DataError, match="already exists"):
        C.create_constitution(db, "mine")
    with pytest.raises(LookupError, match="no principle named 'nope'"):
        C.disable_principle(db, "mine", "nope")
    assert counts(db) == before


# ----------------------------------------------------------------------------- bad files


def _bad(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_constitution_import_bad_input(db, tmp_path):
    good = {
        "h0": {"prompt": ["\n\nCritiqueRequest: a\n\nCritique:"], "edit_request": "\n\nRevisionRequest: b"}
    }
    cases = [
        (
            _bad(tmp_path, "malformed.json", b'{\n "h0": {\n  "prompt": [,\n}'),
            r"malformed.json:3: not valid JSON",
        ),
        (_bad(tmp_path, "empty.json", b"  \n"), r"empty.json: the file is empty"),
        (
            _bad(tmp_path, "latin.json", '["\\nChoose the caf\xe9 reply. Options:"]'.encode("latin-1")),
            r"latin.json:1: not UTF-8 text \(byte 0xe9\)",
        ),
        (
            _bad(tmp_path, "missing.json", json.dumps({"h0": {"prompt": ["x"]}}).encode()),
            r"missing.json: entry 'h0' needs 'prompt' \(a list\) and 'edit_request'",
        ),
        (
            _bad(
                tmp_path,
                "huge.json",
                json.dumps({"h0": {**good["h0"], "edit_request": "x" * 5_000_000}}).encode(),
            ),
            r"field 'revision' is 5,000,000 bytes, over the limit of 100,000 bytes",
        ),
        (
            _bad(tmp_path, "cot.json", json.dumps([{"prompt": "no placeholder"}]).encode()),
            r"needs a '\{\}' where the principle goes",
        ),
    ]
    for path, message in cases:
        with pytest.raises(DataError, match=message):
            C.import_file(db, path)
        assert counts(db) == {"constitutions": 0, "constitution_versions": 0, "principles": 0, "exemplars": 0}


# ----------------------------------------------------------------------------- prompt templates


def test_comparison_prompt_reproduces_the_papers_hhh_eval(shared):
    lines = (shared / "cai-paper" / "evals" / "HHH-dev-sample.jsonl").read_text().splitlines()
    principle = json.loads((shared / "cai-paper" / "prompts" / "RLMadisonInstructions.json").read_text())[1]
    for line in lines:
        row = json.loads(line)
        prompt, good, bad = split_pair(row["text_correct"], row["text_incorrect"])
        a, b = (good, bad) if row["corrects"] == [" (A)"] else (bad, good)
        assert P.comparison_prompt(prompt, principle, a, b) == row["prompt"]
    assert len(lines) == 95


def test_comparison_prompt_literal_with_exemplars():
    ex = [
        {"prompt": "\n\nHuman: q1\n\nAssistant:", "corrects": ["good1"], "incorrects": ["bad1"]},
        {
            "kind": "comparison",
            "position": 1,
            "data": {"prompt": "\n\nHuman: q2\n\nAssistant:", "corrects": ["good2"], "incorrects": ["bad2"]},
        },
    ]
    head = "\n\nConsider the following conversation between a human and an assistant:\n\n"
    text = P.comparison_prompt(
        "\n\nHuman: hi\n\nAssistant: yo\n\nHuman: ok?\n\nAssistant:", "Pick one.", " a ", "b", ex
    )
    assert text == (
        head
        + "Human: q1\n\n\nPick one. Options:\n (A) [[[good1]]]\n (B) [[[bad1]]]\n\nThe answer is: (A)"
        + head
        + "Human: q2\n\n\nPick one. Options:\n (A) [[[bad2]]]\n (B) [[[good2]]]\n\nThe answer is: (B)"
        + head
        + "Human: hi\n\nAssistant: yo\n\nHuman: ok?\n\n\nPick one. Options:\n (A) [[[a]]]\n (B) [[[b]]]"
        "\n\nThe answer is:"
    )


def test_cot_comparison_prompt_and_answer():
    ex = [
        {
            "prompt": "\n\nHuman: EX\n\n{}\n (A) [[[x]]]\n (B) [[[y]]]\n\nAssistant: Let's think step by step: "
            "r\n\nHuman:\nSo the answer is: (A)"
        }
    ]
    text = P.comparison_cot_prompt(
        "\n\nHuman: hi\n\nAssistant: yo\n\nHuman: ok?\n\nAssistant:",
        {"text": "\nPick. Options:"},
        "a",
        "b",
        ex,
    )
    assert text == (
        "\n\nHuman: EX\n\n\nPick. Options:\n (A) [[[x]]]\n (B) [[[y]]]\n\nAssistant: Let's think step by step: "
        "r\n\nHuman:\nSo the answer is: (A)"
        "\n\nHuman: Consider the following conversation between a human (H) and an assistant (A):\n\n"
        "H: hi\n\nA: yo\n\nH: ok?\n\n\nPick. Options:\n (A) [[[a]]]\n (B) [[[b]]]"
        "\n\nAssistant: Let's think step by step:"
    )
    assert (
        P.comparison_cot_answer_prompt("X:", " (A) is kind.\n")
        == "X: (A) is kind.\n\nHuman:\nSo the answer is:"
    )


def test_critique_and_revision_prompts_literal():
    ex = [
        "\n\nHuman: e\n\nAssistant: r\n\nCritiqueRequest: c?\n\nCritique: bad\n\nRevisionRequest: fix\n\n"
        "Revision: better\n\nHuman:"
    ]
    pr = {"critique": "Find harm.", "revision": "\n\nRevisionRequest: Remove harm.\n\nRevision:"}
    shot = "\n\nHuman: e\n\nAssistant: r\n\nCritiqueRequest: c?\n\nCritique: bad\n\nRevisionRequest: fix\n\nRevision: better"
    conv = "\n\nHuman: hi\n\nAssistant:"
    assert P.critique_prompt(conv, " hello ", pr, ex) == (
        shot + "\n\nHuman: hi\n\nAssistant: hello\n\nCritiqueRequest: Find harm.\n\nCritique:"
    )
    assert P.revision_prompt(conv, "hello", pr, " rude ", ex) == (
        shot + "\n\nHuman: hi\n\nAssistant: hello\n\nCritiqueRequest: Find harm.\n\nCritique: rude"
        "\n\nRevisionRequest: Remove harm.\n\nRevision:"
    )
    assert P.revision_prompt(conv, "hello", pr, None, ex) == (
        "\n\nHuman: e\n\nAssistant: r\n\nRevisionRequest: fix\n\nRevision: better"
        "\n\nHuman: hi\n\nAssistant: hello\n\nRevisionRequest: Remove harm.\n\nRevision:"
    )


def test_wrap_and_plain():
    assert P.wrap_critique("Find harm. ") == "\n\nCritiqueRequest: Find harm.\n\nCritique:"
    assert P.wrap_critique("\n\nCritiqueRequest: x\n\nCritique:") == "\n\nCritiqueRequest: x\n\nCritique:"
    assert P.wrap_revision("Fix.") == "\n\nRevisionRequest: Fix.\n\nRevision:"
    assert P.wrap_comparison("Pick one.") == "\nPick one. Options:"
    assert P.wrap_comparison("Pick one. Options:") == "\nPick one. Options:"
    assert P.plain("\n\nCritiqueRequest: Find harm.\n\nCritique:") == "Find harm."
    assert P.plain("\nPick one. Options:") == "Pick one."


def test_previews_use_the_default_constitution(db):
    v = C.seed_default(db)
    harm = v["principles"][0]
    shots = [e for e in v["exemplars"] if e["kind"] == "critique"]
    out = P.preview_critique(harm, "\n\nHuman: hi\n\nAssistant: go away", shots)
    assert out["critique"].endswith("\n\nHuman: hi\n\nAssistant: go away" + harm["critique"])
    assert out["revision"].endswith(harm["critique"] + " " + P.CRITIQUE_PLACEHOLDER + harm["revision"])
    comp = next(p for p in v["principles"] if p["kind"] == "comparison")
    text = P.preview_comparison(comp, "\n\nHuman: hi\n\nAssistant:", "a", "b")
    assert text.endswith("Human: hi\n\n" + comp["text"] + "\n (A) [[[a]]]\n (B) [[[b]]]\n\nThe answer is:")


def test_preview_principle_picks_the_principle_and_its_exemplars():
    version = {"version": 3, "principles": [
        {"kind": "critique", "name": "harm", "critique": "Harmful?", "revision": "Fix it."},
        {"kind": "comparison", "name": "kind", "text": "Which is kinder?"}],
        "exemplars": [{"kind": "comparison", "data": "ignored for critiques"}]}
    assert P.preview_principle(version, "harm", "\n\nHuman: hi\n\nAssistant: no", "", "", 1, False) == (
        "=== critique prompt ===\n\n\nHuman: hi\n\nAssistant: no\n\nCritiqueRequest: Harmful?\n\nCritique:"
        "\n\n=== revision prompt ===\n\n\nHuman: hi\n\nAssistant: no\n\nCritiqueRequest: Harmful?\n\nCritique: "
        "<the model's critique goes here>\n\nRevisionRequest: Fix it.\n\nRevision:")
    assert P.preview_principle(version, "kind", "\n\nHuman: hi\n\nAssistant:", "a", "b", 0, False) == (
        P.comparison_prompt("\n\nHuman: hi", "Which is kinder?", "a", "b"))
    with pytest.raises(LookupError, match="version 3 has no principle named 'nope'"):
        P.preview_principle(version, "nope", "x", "", "", 0, False)
