"""Chains tab: server-side paging and filters over indexes, full-text search, and the escaped chain view."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from cai import models, sl, store, users
from cai.queries import chains as Q
from ui import chains as C
from ui.common import AppContext

ADMIN, VIEWER, RATER = (SimpleNamespace(username=n) for n in ("ada", "val", "rae"))


def make_chain(prompt_id: int, principle: str, initial: str, revision: str) -> sl.Chain:
    item = sl.ChainItem(prompt_id, f"\n\nHuman: question {prompt_id}?\n\nAssistant:")
    chain = sl.Chain(item, [principle])
    chain.steps = [
        sl.Step("initial", 0, "", "sent-0", initial, 5, 3, 0.1),
        sl.Step("critique", 1, principle, "sent-1", " It is rude.", 9, 3, 0.1),
        sl.Step("revision", 1, principle, "sent-2", revision, 12, 4, 0.1, ["truncated"]),
    ]
    return chain


@pytest.fixture
def filled(db):
    db["runs"].insert_all([{"id": 1, "kind": "sl", "status": "done"}, {"id": 2, "kind": "sl", "status": "done"}])
    tiny = models.ensure_model(db, "tiny")["id"]
    other = models.ensure_model(db, "default")["id"]
    for i in range(1, 61):
        run, model = (1, tiny) if i <= 40 else (2, other)
        principle = "harm" if i % 2 else "ethics"
        final = "a kind answer about gardening" if i == 7 else f"revised answer {i}"
        chain = make_chain(i, principle, f" first answer {i}", " " + final)
        sl.store_chain(db, run, chain, model_id=model, constitution_version_id=None)
    return db


def test_pages_are_newest_first_and_clamped(filled):
    p = Q.chain_page(filled, Q.ChainFilter(), page=1, size=25)
    assert (p.total, p.pages, p.page) == (60, 3, 1)
    assert [r["id"] for r in p.rows][:3] == [60, 59, 58]
    last = Q.chain_page(filled, Q.ChainFilter(), page=99, size=25)
    assert last.page == 3
    assert [r["id"] for r in last.rows] == list(range(10, 0, -1))


def test_filters_combine(filled):
    tiny = models.get_model(filled, "tiny")["id"]
    assert Q.chain_page(filled, Q.ChainFilter(run_id=2)).total == 20
    assert Q.chain_page(filled, Q.ChainFilter(model_id=tiny)).total == 40
    p = Q.chain_page(filled, Q.ChainFilter(run_id=1, principle="ethics"), size=5)
    assert p.total == 20
    assert [r["id"] for r in p.rows] == [40, 38, 36, 34, 32]
    assert Q.chain_page(filled, Q.ChainFilter(principle="no-such")).total == 0


def test_text_search_uses_the_fts_index(filled):
    p = Q.chain_page(filled, Q.ChainFilter(text="gardening"))
    assert [r["id"] for r in p.rows] == [7]
    # Quotes and FTS operators in user input are searched for, not parsed.
    assert Q.chain_page(filled, Q.ChainFilter(text='"kind" OR answer*')).total == 0
    assert Q.chain_page(filled, Q.ChainFilter(text="question 12")).total >= 1


def test_a_lone_quote_or_stray_fts_syntax_is_searched_as_words_never_an_error(filled):
    """#25.9: a lone `"` in the search left an fts5 traceback in the log and showed the raw sqlite message."""
    totals = {t: Q.chain_page(filled, Q.ChainFilter(text=t)).total
              for t in ('"', '""', 'a"b', "NEAR(", "^x", "x:y", "kind OR", "-x", "a AND")}
    assert totals == {'"': 60, '""': 60, 'a"b': 0, "NEAR(": 0, "^x": 0, "x:y": 0, "kind OR": 0, "-x": 0, "a AND": 0}
    assert [r["id"] for r in Q.chain_page(filled, Q.ChainFilter(text='"gardening')).rows] == [7]
    assert (Q.fts_query('"'), Q.fts_query('say "hi'), Q.fts_query("  ")) == ("", '"say" """hi"', "")


def test_page_query_plans_use_indexes(filled):
    """The filters walk indexes: no full scan of chains or chain_steps for a filtered page."""
    for f in (Q.ChainFilter(run_id=1), Q.ChainFilter(model_id=1), Q.ChainFilter(principle="harm")):
        where, args = Q.where_clause(filled, f)
        plan = " | ".join(r[3] for r in filled.execute(f"explain query plan select c.id from chains c{where} "
                                                        "order by c.id desc limit 25", args).fetchall())
        assert "SCAN c " not in plan + " " and "SCAN chain_steps" not in plan, plan


def test_frame_shows_last_human_turn_and_flag_kinds(filled):
    frame = C.page_frame(Q.chain_page(filled, Q.ChainFilter(run_id=1), size=1))
    row = frame.iloc[0].to_dict()
    assert row == {
        "id": 40, "run": 1, "model": "tiny", "constitution": "", "mode": "critique", "revisions": 1,
        "flags": "truncated", "prompt": "question 40?", "final": "revised answer 40",
    }


def test_chain_view_escapes_and_marks_changes(db):
    db["runs"].insert({"id": 1, "kind": "sl", "status": "done"})
    evil = make_chain(1, "harm<b>", ' <script>alert("x")</script> hello', " <img src=x onerror=alert(1)> hello there")
    chain_id = sl.store_chain(db, 1, evil, model_id=None, constitution_version_id=None)
    db["chain_steps"].update(db.execute("select id from chain_steps where idx = 2").fetchone()[0], {"pm_score": 0.25})
    html = C.chain_html(sl.get_chain(db, chain_id))
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "<del>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</del>" in html
    assert "<ins>&lt;img src=x onerror=alert(1)&gt;</ins>" in html
    assert "hello<ins> there</ins>" in html
    assert "principle: harm&lt;b&gt;" in html
    assert "PM score +0.250" in html
    assert html.index("Initial response") < html.index("Critique 1") < html.index("Revision 1")


def test_handlers_enforce_roles(filled, db_path):
    for name, role in (("ada", "admin"), ("val", "viewer"), ("rae", "rater")):
        users.add_user(filled, name, role, "password1")
    ctx = AppContext(db_path)
    frame, info, page = C.search(ctx, "1", "", "", "", "", 2, VIEWER)
    assert (info, page, len(frame)) == ("Page 2 of 2 · 40 chains", 2, 15)
    assert "Chain 5" in C.open_chain(ctx, 5, ADMIN)
    with pytest.raises(gr.Error, match="needs the admin or viewer role; you are rae \\(rater\\)"):
        C.search(ctx, "", "", "", "", "", 1, RATER)
    with pytest.raises(gr.Error, match="you are anonymous"):
        C.open_chain(ctx, 5, SimpleNamespace(username=None))
    with pytest.raises(gr.Error, match="no chain with id 999"):
        C.open_chain(ctx, 999, VIEWER)


def test_fts_follows_updates_and_deletes(filled):
    filled["chains"].update(7, {"final": "now about cooking"})
    assert Q.chain_page(filled, Q.ChainFilter(text="gardening")).total == 0
    assert [r["id"] for r in Q.chain_page(filled, Q.ChainFilter(text="cooking")).rows] == [7]
    assert store.loads(filled["chains"].get(7)["flags"]) == ["revision1:truncated"]


def test_diff_groups_small_gaps_and_whole_rewrites():
    from ui.common import diff_html

    assert diff_html("Say it <b>now</b> please.", "Say it <b>later</b> please.") == (
        '<div class="cai-text">Say it <del>&lt;b&gt;now&lt;/b&gt;</del><ins>&lt;b&gt;later&lt;/b&gt;</ins> please.</div>')
    assert diff_html("I have done this for years.", "I can't help with that request.") == (
        '<div class="cai-text">I <del>have done this for years.</del><ins>can&#x27;t help with that request.</ins></div>')
    assert diff_html("Sure, here goes.", "No.") == '<div class="cai-text"><del>Sure, here goes.</del><ins>No.</ins></div>'
    assert diff_html("whether physically, emotionally or socially.", "physically, emotionally or financially.") == (
        '<div class="cai-text"><del>whether </del>physically, emotionally or <del>socially.</del>'
        '<ins>financially.</ins></div>')


def test_flag_legend_explains_unchanged():
    """#26.3: the Chains legend says what `unchanged` means."""
    assert "**unchanged**: the step repeats the step before it verbatim or nearly so" in C.flag_legend()
