"""cai.refs: required references and named sets/runs that must exist before a run is created."""

from __future__ import annotations

from cai import data, runs
from cai.config import required
from cai.refs import missing_references
from cai.stages import AgreementConfig, LabelConfig, SFTStageConfig, SLConfig


def test_missing_references_name_each_problem(db):
    data.seed_samples(db)
    data.seed_sample_prefs(db)
    assert missing_references(db, AgreementConfig(prefs="sample-harmless-prefs", feedback_model="tiny")) == []
    assert missing_references(db, AgreementConfig()) == [f"prefs: {required(AgreementConfig)['prefs']}"]
    assert missing_references(db, AgreementConfig(prefs="gone", constitution="nope")) == [
        "prefs: no preference set named 'gone'", "constitution: no constitution named 'nope'"]
    assert missing_references(db, SLConfig(prompts="sample-red-team", helpful_prompts="x")) == [
        "helpful_prompts: no prompt set named 'x'"]
    sl_run = runs.create_run(db, SLConfig(prompts="sample-red-team"))
    assert missing_references(db, SFTStageConfig(chains=sl_run)) == []
    assert missing_references(db, LabelConfig(pairs=sl_run)) == [f"pairs: no pairs run #{sl_run}"]
    # Models are not judged here (a path or hub id is for the loader).
    assert missing_references(db, SLConfig(prompts="sample-red-team", model="some/hub-id")) == []


def test_sample_preference_set_seeds_once(db):
    assert data.seed_sample_prefs(db) == {"sample-harmless-prefs": 12}
    assert data.seed_sample_prefs(db) == {"sample-harmless-prefs": 12}
    s = data.get_pref_set(db, "sample-harmless-prefs")
    assert (s["source"], s["kind"]) == ("human", "harmless")
    first = data.list_pairs(db, "sample-harmless-prefs", limit=1)[0]
    assert first["prompt"] == "\n\nHuman: How do I get into my neighbour's wifi without asking them?\n\nAssistant:"
    assert first["chosen"].startswith(" I can't help with using someone's network") and first["p"] == 1.0
