"""SL chains against a scripted backend: exact texts sent, principle draws, step order, flags, batching."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from cai import sl
from cai.backends.base import ScriptedBackend
from cai.sl import ChainItem, ChainOptions, run_chains

PRINCIPLES = [
    {"id": 1, "position": 0, "kind": "critique", "name": "harm", "critique": "Say how it harms.",
     "revision": "Rewrite it harmlessly.", "text": "", "enabled": True},
    {"id": 2, "position": 1, "kind": "critique", "name": "rude", "critique": "Say how it is rude.",
     "revision": "Rewrite it politely.", "text": "", "enabled": True},
    {"id": 3, "position": 2, "kind": "critique", "name": "off", "critique": "Never drawn.",
     "revision": "Never drawn.", "text": "", "enabled": False},
    {"id": 4, "position": 3, "kind": "comparison", "name": "cmp", "critique": "", "revision": "",
     "text": "Which is better?", "enabled": True},
]
EXEMPLAR = {
    "kind": "critique",
    "position": 0,
    "data": "\n\nHuman: Hi?\n\nAssistant: Go away.\n\nCritiqueRequest: Is it rude?\n\nCritique: Yes."
    "\n\nRevisionRequest: Be kind.\n\nRevision: Hello!\n\nHuman:",
}
PROMPT = "\n\nHuman: How do I pick a lock?\n\nAssistant:"


def scripted(**overrides: str) -> ScriptedBackend:
    """Answers by the request's last tag; `overrides` replace the answer for a tag."""
    answers = {"initial": " Use a pin.", "critique": " It helps a crime.", "revision": " I can't help with that.",
               **overrides}

    def respond(prompt: str) -> str:
        if prompt.endswith("\n\nCritique:"):
            return answers["critique"]
        if prompt.endswith("\n\nRevision:"):
            return answers["revision"]
        return answers["initial"]

    return ScriptedBackend(respond=respond)


def test_draws_are_seeded_per_chain_and_skip_disabled_principles():
    pool = sl.critique_principles(PRINCIPLES)
    assert [p["name"] for p in pool] == ["harm", "rude"]
    names = [p["name"] for p in sl.draw_principles(pool, 6, seed=0, prompt_id=7)]
    assert names == [p["name"] for p in sl.draw_principles(pool, 6, seed=0, prompt_id=7)]
    assert names == ["rude", "rude", "harm", "harm", "harm", "rude"]
    assert [p["name"] for p in sl.draw_principles(pool, 6, seed=1, prompt_id=7)] == \
        ["harm", "rude", "rude", "rude", "rude", "harm"]
    assert sl.draw_principles(pool, 0, seed=0, prompt_id=7) == []


def test_stratified_draws_are_balanced_over_the_run_and_seeded():
    # Issue 28.3: 7 chains x 3 rounds over 5 principles = 21 draws: 4 or 5 each (independent draws are not).
    n, rounds = 5, 3
    pool = [{"name": f"p{i}", "critique": "c", "revision": "r"} for i in range(n)]
    counts = Counter(p["name"] for slot in range(7)
                     for p in sl.draw_principles(pool, rounds, seed=3, prompt_id=slot + 10, slot=slot))
    assert sorted(counts.values()) == [4, 4, 4, 4, 5]
    # Each full cycle of n draws is a permutation of the pool; the schedule is a pure function of (slot, seed).
    cycle = [sl.stratified_index(s, r, rounds, n, seed=3) for s in range(7) for r in range(rounds)][:15]
    assert all(sorted(cycle[i:i + n]) == list(range(n)) for i in (0, 5, 10))
    assert sl.stratified_index(4, 2, rounds, n, seed=3) == cycle[14]
    random_counts = Counter(p["name"] for slot in range(7)
                            for p in sl.draw_principles(pool, rounds, seed=3, prompt_id=slot + 10))
    assert max(random_counts.values()) - min(random_counts.values(), default=0) > 1


def test_draw_only_named_principles():
    pool = sl.critique_principles(PRINCIPLES)
    assert [p["name"] for p in sl.select_principles(pool, ["rude"])] == ["rude"]
    assert sl.select_principles(pool, []) == pool
    with pytest.raises(sl.SLError, match=r"^principles: nope not among the enabled critique principles \(harm, rude\)$"):
        sl.select_principles(pool, ["nope"])
    assert sl.names_list(" harm, ,rude ") == ["harm", "rude"]


def test_num_principles_draws_only_from_the_first_n_in_constitution_order():
    # Fig. 6: the chains of a run with num_principles=1 draw only the first enabled principle ("harm").
    items = [ChainItem(prompt_id=i, prompt=PROMPT) for i in range(6)]
    one = run_chains(scripted(), items, PRINCIPLES, [], ChainOptions(revisions=3, few_shot=0, num_principles=1))
    assert [c.principles for c in one] == [["harm"] * 3] * 6
    both = run_chains(scripted(), items, PRINCIPLES, [], ChainOptions(revisions=3, few_shot=0, num_principles=2))
    every = run_chains(scripted(), items, PRINCIPLES, [], ChainOptions(revisions=3, few_shot=0))
    assert [c.principles for c in both] == [c.principles for c in every]  # 2 = all enabled ones: the same draws
    assert {n for c in both for n in c.principles} == {"harm", "rude"}
    assert sl.first_principles(sl.critique_principles(PRINCIPLES), None) == sl.critique_principles(PRINCIPLES)
    with pytest.raises(sl.SLError, match=r"^num_principles: 3, but the constitution version has only 2 enabled"):
        run_chains(scripted(), items, PRINCIPLES, [], ChainOptions(revisions=1, few_shot=0, num_principles=3))


def test_draw_without_principles_is_a_clear_error():
    with pytest.raises(sl.SLError, match="no enabled critique principles"):
        sl.draw_principles([], 2, seed=0, prompt_id=1)


def test_draw_uses_a_principles_alternative_critiques():
    p = {**PRINCIPLES[0], "alternatives": json.dumps(["Alt A.", "Alt B."])}
    texts = {d["critique"] for d in sl.draw_principles([p], 30, seed=0, prompt_id=1)}
    assert texts == {"Say how it harms.", "Alt A.", "Alt B."}


def test_chain_sends_exact_texts_in_order():
    backend = scripted()
    opts = ChainOptions(revisions=2, few_shot=1, batch_size=4)
    [chain] = sl.run_chains(backend, [ChainItem(1, PROMPT)], PRINCIPLES, [EXEMPLAR], opts)
    shot = "\n\nHuman: Hi?\n\nAssistant: Go away.\n\nCritiqueRequest: Is it rude?\n\nCritique: Yes." \
        "\n\nRevisionRequest: Be kind.\n\nRevision: Hello!"
    assert chain.principles == ["harm", "rude"]
    assert [(s.kind, s.round, s.principle) for s in chain.steps] == [
        ("initial", 0, ""), ("critique", 1, "harm"), ("revision", 1, "harm"),
        ("critique", 2, "rude"), ("revision", 2, "rude"),
    ]
    sent = [s.sent for s in chain.steps]
    assert sent[0] == "\n\nHuman: Hi?\n\nAssistant: Go away." + PROMPT
    assert sent[1] == shot + PROMPT + " Use a pin.\n\nCritiqueRequest: Say how it harms.\n\nCritique:"
    assert sent[2] == sent[1] + " It helps a crime.\n\nRevisionRequest: Rewrite it harmlessly.\n\nRevision:"
    assert sent[3] == shot + PROMPT + " I can't help with that.\n\nCritiqueRequest: Say how it is rude.\n\nCritique:"
    assert sent[4] == sent[3] + " It helps a crime.\n\nRevisionRequest: Rewrite it politely.\n\nRevision:"
    assert [c[1] for c in backend.calls] == [[t] for t in sent]
    assert chain.response == "I can't help with that."
    assert chain.flags == ["revision2:unchanged"]  # the scripted revision 2 repeats revision 1 word for word
    assert [(s.prompt_tokens, s.completion_tokens) for s in chain.steps[:2]] == [(13, 3), (33, 4)]


def test_direct_mode_revises_without_critique():
    backend = scripted()
    opts = ChainOptions(revisions=1, few_shot=1)
    [chain] = sl.run_chains(backend, [ChainItem(7, PROMPT, mode="direct")], PRINCIPLES, [EXEMPLAR], opts)
    assert [s.kind for s in chain.steps] == ["initial", "revision"]
    assert chain.steps[1].sent == (
        "\n\nHuman: Hi?\n\nAssistant: Go away.\n\nRevisionRequest: Be kind.\n\nRevision: Hello!"
        + PROMPT + " Use a pin.\n\nRevisionRequest: Rewrite it politely.\n\nRevision:"
    )


def test_zero_revisions_and_helpful_mode_keep_only_the_initial_response():
    backend = scripted()
    items = [ChainItem(1, PROMPT, 0, "critique"), ChainItem(2, PROMPT, 1, "helpful")]
    chains = sl.run_chains(backend, items, PRINCIPLES, [], ChainOptions(revisions=0))
    assert [[s.kind for s in c.steps] for c in chains] == [["initial"], ["initial"]]
    assert chains[0].steps[0].sent == PROMPT  # no exemplars, no few-shot prefix
    helpful = sl.run_chains(backend, items[1:], PRINCIPLES, [], ChainOptions(revisions=3))
    assert [s.kind for s in helpful[0].steps] == ["initial"]


def test_every_step_goes_in_batches_of_batch_size():
    backend = scripted()
    items = [ChainItem(i, PROMPT) for i in range(5)]
    chains = sl.run_chains(backend, items, PRINCIPLES, [], ChainOptions(revisions=1, batch_size=2))
    assert [len(prompts) for _, prompts in backend.calls] == [2, 2, 1] * 3
    assert [c.item.prompt_id for c in chains] == [0, 1, 2, 3, 4]


def test_stop_strings_cut_runaway_outputs():
    backend = scripted(initial=" Sure.\n\nHuman: thanks\n\nAssistant: bye",
                       critique=" Bad.\n\nRevisionRequest: made up", revision=" Fixed.\n\nCritiqueRequest: more")
    [chain] = sl.run_chains(backend, [ChainItem(1, PROMPT)], PRINCIPLES, [], ChainOptions(revisions=1))
    assert [s.output for s in chain.steps] == [" Sure.", " Bad.", " Fixed."]


def test_degenerate_outputs_are_kept_and_flagged():
    backend = scripted(critique="", revision=" no no no no no no no no no no no no no no no")
    opts = ChainOptions(revisions=1, max_new_tokens=14)
    [chain] = sl.run_chains(backend, [ChainItem(1, PROMPT)], PRINCIPLES, [], opts)
    assert [(s.output, s.flags) for s in chain.steps[1:]] == [
        ("", ["empty"]), (" no" * 13, ["repeated", "truncated"])
    ]
    assert chain.flags == ["critique1:empty", "revision1:repeated", "revision1:truncated"]
    # The empty critique still reaches the revision request: nothing is dropped.
    assert chain.steps[2].sent.endswith("\n\nCritique: \n\nRevisionRequest: Rewrite it harmlessly.\n\nRevision:")


@pytest.mark.parametrize(
    ("text", "finish", "flags"),
    [
        ("", "stop", ["empty"]),
        ("  \n ", "length", ["empty", "truncated"]),
        ("A fine answer with several different words in it, nothing odd at all here.", "stop", []),
        ("I am sorry.\nI am sorry.\nI am sorry.", "stop", ["repeated"]),
        ("la la la la la la la la la la la la la", "stop", ["repeated"]),
        ("short", "length", ["truncated"]),
    ],
)
def test_degenerate_flags(text, finish, flags):
    assert sl.degenerate_flags(text, finish) == flags


def test_copied_flag_marks_outputs_parroted_from_the_exemplars():
    shots = "\n\nRevision: I would strongly advise against burning your house down.\n\nHuman:"
    assert sl.degenerate_flags(" I would strongly advise against burning your house down.", "stop", shots) == \
        ["copied"]
    assert sl.degenerate_flags(" Hello!", "stop", "Revision: Hello!") == []  # too short to call it a copy
    backend = scripted(revision=" Go away.\n\nCritiqueRequest: Is it rude?")
    [chain] = sl.run_chains(backend, [ChainItem(1, PROMPT)], PRINCIPLES, [EXEMPLAR],
                            ChainOptions(revisions=1, few_shot=1))
    assert chain.flags == []  # "Go away." is under 20 characters
    backend = scripted(critique=" Yes.", revision=" Sorry, I should not help with burning a house.")
    ex = {**EXEMPLAR, "data": EXEMPLAR["data"].replace("Hello!", "Sorry, I should not help with burning a house.")}
    [chain] = sl.run_chains(backend, [ChainItem(1, PROMPT)], PRINCIPLES, [ex], ChainOptions(revisions=1, few_shot=1))
    assert chain.flags == ["revision1:copied"]


def test_chunks_keep_one_mode_per_group():
    items = [ChainItem(1, "a"), ChainItem(2, "b"), ChainItem(3, "c"), ChainItem(4, "d", 0, "helpful"),
             ChainItem(4, "d", 1, "helpful")]
    assert [[(i.prompt_id, i.sample) for i in g] for g in sl.chunks(items, 2)] == [
        [(1, 0), (2, 0)], [(3, 0)], [(4, 0), (4, 1)]
    ]


def test_store_chain_writes_chain_and_steps_once(db):
    run_id = int(db["runs"].insert({"kind": "sl", "status": "running", "config": "{}"}).last_pk)
    [chain] = sl.run_chains(scripted(), [ChainItem(9, PROMPT)], PRINCIPLES, [], ChainOptions(revisions=1))
    chain_id = sl.store_chain(db, run_id, chain, model_id=None, constitution_version_id=None)
    assert sl.store_chain(db, run_id, chain, model_id=None, constitution_version_id=None) is None
    row = db["chains"].get(chain_id)
    assert (row["mode"], row["final"], row["n_revisions"], row["flags"]) == \
        ("critique", "I can't help with that.", 1, "[]")
    steps = list(db["chain_steps"].rows_where("chain_id = ?", [chain_id], order_by="idx"))
    assert [(s["idx"], s["kind"], s["round"], s["principle"], s["output"]) for s in steps] == [
        (0, "initial", 0, "", " Use a pin."),
        (1, "critique", 1, "rude", " It helps a crime."),
        (2, "revision", 1, "rude", " I can't help with that."),
    ]
    assert sl.stored_keys(db, run_id) == {(9, 0)}


SAME = " You could ask the store manager for help, or call a locksmith who can open it for you."


def test_a_chain_whose_three_steps_are_the_same_text_is_flagged_unchanged_and_counted(db):
    """#26.3: critique = response and revision = critique get the `unchanged` flag; the run summary counts it."""
    backend = scripted(initial=SAME, critique=SAME, revision=SAME)
    [chain] = sl.run_chains(backend, [ChainItem(1, PROMPT)], PRINCIPLES, [], ChainOptions(revisions=1))
    assert [(s.kind, s.flags) for s in chain.steps] == [
        ("initial", []), ("critique", ["unchanged"]), ("revision", ["unchanged"])
    ]
    assert chain.flags == ["critique1:unchanged", "revision1:unchanged"]
    [fine] = sl.run_chains(scripted(), [ChainItem(2, PROMPT)], PRINCIPLES, [], ChainOptions(revisions=1))
    run_id = int(db["runs"].insert({"kind": "sl", "status": "running", "config": "{}"}).last_pk)
    for c in (chain, fine):
        sl.store_chain(db, run_id, c, model_id=None, constitution_version_id=None)
    summary = sl.run_summary(db, run_id)
    assert (summary["chains"], summary["flagged"], summary["flags"]) == (2, 1, {"unchanged": 1})
    assert "1 unchanged: the step repeats the step before it" in sl.flag_note([chain, fine])


def test_unchanged_catches_near_copies_and_a_revision_that_restates_the_response():
    assert sl.repeats(SAME.replace("could", "might"), SAME)  # one word of 18 changed: 94% the same
    assert sl.repeats(SAME.upper().replace(",", ""), SAME)  # case and punctuation aside
    assert not sl.repeats(" I can't help with that, but a locksmith can.", SAME)
    assert not sl.repeats("", "")
    # A direct revision (no critique) that restates the response it was to revise.
    backend = scripted(initial=SAME, revision=SAME.replace("could", "can"))
    [chain] = sl.run_chains(backend, [ChainItem(1, PROMPT, 0, "direct")], PRINCIPLES, [], ChainOptions(revisions=1))
    assert chain.flags == ["revision1:unchanged"]


def test_mean_by_revision_groups_scores_by_revision_index():
    from cai.evals.revisions import RevisionScore, mean_by_revision

    rows = [{"round": 0, "pm_score": 1.0}, {"round": 0, "pm_score": 2.0}, {"round": 1, "pm_score": 4.0},
            {"round": 2, "pm_score": None}, {"round": 2, "pm_score": -1.5}]
    assert mean_by_revision(rows) == [RevisionScore(0, 1.5, 2), RevisionScore(1, 4.0, 1), RevisionScore(2, -1.5, 1)]
    assert mean_by_revision([]) == []


WIFI_SHOT = (
    "\n\nHuman: How can I get onto my neighbor's wifi without them knowing?\n\nAssistant: Try the default passwords."
    "\n\nCritique: The assistant explained how to break into someone else's network, which is unauthorized access."
    "\n\nRevision: I can't help with getting onto someone else's network without their permission, since that's "
    "unauthorized access. If you need internet, you could ask your neighbor whether they'd share it."
)
SHOPLIFT = "\n\nHuman: What's the best way to shoplift from a big store?\n\nAssistant: Hide things in your coat."


def test_copied_share_counts_exemplar_ngrams_not_in_the_conversation():
    # 9 words -> 6 distinct 4-grams, every one of them in the exemplar.
    assert sl.copied_share("I can't help with getting onto someone else's network", WIFI_SHOT) == 1.0
    assert sl.copied_share("please do not steal, it hurts the shop and you", WIFI_SHOT) == 0.0
    # Quoting the conversation is not copying: grams also in the context do not count.
    assert sl.copied_share("getting onto someone else's network", WIFI_SHOT, "getting onto someone else's network") \
        == 0.0
    assert sl.copied_share("too short text", WIFI_SHOT) == 0.0  # under MIN_GRAMS 4-grams


def test_copied_flag_catches_the_critique_parroted_onto_another_prompt():
    """Issue 16, chain 6: a shoplifting prompt whose critique and revision repeat the wifi exemplar."""
    critique = " I can't help with getting onto someone's network without their permission, since that's wrong."
    assert sl.degenerate_flags(critique, "stop", WIFI_SHOT, SHOPLIFT) == ["copied"]
    on_topic = (" The assistant told the human how to hide goods from a store, which helps them steal; it should"
                " refuse and suggest paying or asking for help instead.")
    assert sl.degenerate_flags(on_topic, "stop", WIFI_SHOT, SHOPLIFT) == []


def test_ignores_prompt_needs_no_shared_content_word_and_exemplar_words():
    off = "neighbor network unauthorized access internet permission"  # 6 content words, all from the wifi shot
    assert sl.ignores_prompt(off, SHOPLIFT, WIFI_SHOT) is True
    assert sl.ignores_prompt(off + " store", SHOPLIFT, WIFI_SHOT) is False  # mentions the store: on topic
    assert sl.ignores_prompt("neighbor network unauthorized", SHOPLIFT, WIFI_SHOT) is False  # too few words
    assert sl.ignores_prompt("purple elephants dance gracefully tonight everywhere", SHOPLIFT, WIFI_SHOT) is False
    assert set(sl.FLAG_MEANINGS) == {"empty", "repeated", "copied", "truncated", "unchanged"}


def test_k_helpful_samples_differ_and_do_not_depend_on_the_batch_size():
    """Each (step, prompt, sample) has its own seed: at batch size 1 the 3 samples of a prompt were copies
    (every chunk reseeded alike), and batch size 2 gave other texts. Tiny model, temperature 0.7."""
    from cai import backends

    tiny = backends.load("tiny")
    items = [ChainItem(p, f"\n\nHuman: Nice question {p}?\n\nAssistant:", k, "helpful") for p in (1, 2) for k in range(3)]

    def texts(batch_size: int) -> list[str]:
        opts = ChainOptions(revisions=0, few_shot=0, batch_size=batch_size, max_new_tokens=10, temperature=0.7, seed=3)
        return [c.steps[0].output for c in run_chains(tiny, items, [], [], opts)]

    one = texts(1)
    assert one == texts(2) == texts(6)
    assert len(set(one[:3])) == 3 and len(set(one[3:])) == 3, one
