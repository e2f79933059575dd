"""The arena: raters chat with two anonymous models side by side and vote each turn; admins run campaigns.

Two faces over the same handlers: `build_page(...)` is the rater page (its own path, its own sign-in
with a password or a single-use invite code), and `build(ctx)` is the workbench's Arena tab (battles
for signed-in raters, plus campaigns, progress, ratings and invites for admins). Handlers are plain
functions over `cai.arena`; the rater's identity and battle live in server-side `gr.State`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from cai import arena, users
from cai.arena_models import BackendPool, TurnResult, stream_pair
from cai.evals import ratings
from cai.transcript import parse_hh
from ui.arena_rigor import build_rigor
from ui.common import ARENA_ROLES, EDIT_ROLES, AppContext, bind, on_page_load, require

VOTE_LABELS = {"A is better": "A", "B is better": "B", "Tie": "tie", "Both are bad": "bothbad"}
Identify = Callable[[dict[str, Any], Any], dict[str, Any]]


# -- rater handlers (plain functions: tests call them directly) --------------------------------------


def sign_in(ctx: AppContext, state: dict[str, Any], name: str, password: str) -> dict[str, Any]:
    user = users.authenticate(ctx.db(), (name or "").strip(), password or "")
    if user is None or user["role"] not in ARENA_ROLES:
        raise gr.Error("Wrong name or password (or this account may not rate).")
    return {"user": {k: user[k] for k in ("id", "name", "role")}}


def join(ctx: AppContext, state: dict[str, Any], code: str, name: str, password: str) -> dict[str, Any]:
    try:
        user = arena.redeem_invite(ctx.db(), code, (name or "").strip(), password or "")
    except arena.ArenaError as exc:
        raise gr.Error(str(exc)) from None
    return {"user": user}


def campaign_choices(ctx: AppContext) -> list[str]:
    return [c["name"] for c in arena.rater_campaigns(ctx.db())]


def instructions_md(ctx: AppContext, campaign: str | None) -> str:
    for c in arena.rater_campaigns(ctx.db()):
        if c["name"] == campaign:
            return f"### {c['name']}: judge **{c['dimension']}**\n\n{c['instructions']}"
    return "Choose a campaign."


def _status(view: dict[str, Any], extra: str = "") -> str:
    if view["status"] == "ended":
        r = view["reveal"]
        return f"{extra}**Battle over.** Model A was **{r['model_a']}**, Model B was **{r['model_b']}**."
    if view["awaiting_vote"]:
        return f"{extra}Turn {view['turns']} of {view['max_turns']}: which response is better? Vote below."
    if view["seeded_prompt"]:
        return f"{extra}This battle starts from a prompt, shown in the message box: press **Send** to get the answers."
    if view["turns"] >= view["max_turns"]:
        return f"{extra}This battle is complete: end it to see which models you rated."
    return f"{extra}Turn {view['turns'] + 1} of {view['max_turns']}: type a message and press **Send**."


def start(ctx: AppContext, identify: Identify, state: dict[str, Any], campaign: str, request: Any = None) -> tuple:
    user = identify(state, request)
    if not campaign:
        raise gr.Error("Choose a campaign first.")
    try:
        view = arena.start_battle(ctx.db(), campaign, user["id"])
    except arena.ArenaError as exc:
        raise gr.Error(str(exc)) from None
    state = {**state, "user": user, "battle": view["battle_id"]}
    # A new battle's chats are empty, except a gold pair's (cai.arena_raters), whose one turn is shown at once.
    return state, view["chat_a"], view["chat_b"], view["seeded_prompt"] or "", _status(view)


def _battle_id(state: dict[str, Any]) -> int:
    if not state.get("battle"):
        raise gr.Error("Start a battle first.")
    return int(state["battle"])


def _pairs(chat: list[dict[str, str]], message: str, text: str) -> list[dict[str, str]]:
    return [*chat, {"role": "user", "content": message}, {"role": "assistant", "content": text}]


def send(
    ctx: AppContext, pool: BackendPool, identify: Identify, state: dict[str, Any], message: str, request: Any = None
) -> Iterator[tuple]:
    """Stream both answers into the two chats; the turn becomes votable once both are complete."""
    user = identify(state, request)
    battle_id = _battle_id(state)
    try:
        job = arena.begin_turn(ctx.db(), battle_id, user["id"], message)
        view = arena.battle_view(ctx.db(), battle_id, user["id"])
    except arena.ArenaError as exc:
        raise gr.Error(str(exc)) from None
    shown = parse_hh(job.prompt)[-2]["content"]
    chat_a, chat_b = view["chat_a"], view["chat_b"]
    yield _pairs(chat_a, shown, ""), _pairs(chat_b, shown, ""), "", "Both models are answering…"
    result: TurnResult | None = None
    for update in stream_pair(job, pool):
        if isinstance(update, TurnResult):
            result = update
        else:
            yield _pairs(chat_a, shown, update[0]), _pairs(chat_b, shown, update[1]), "", "Both models are answering…"
    assert result is not None, "stream_pair ends with a TurnResult"
    done = arena.finish_turn(ctx.db(), job, result.text_a, result.text_b, seconds=result.seconds, error=result.error)
    if not done["shown"]:
        raise gr.Error("One of the models failed to answer, so this battle has ended. Please start a new one.")
    view = arena.battle_view(ctx.db(), battle_id, user["id"])
    yield view["chat_a"], view["chat_b"], "", _status(view)


def vote(
    ctx: AppContext, identify: Identify, state: dict[str, Any], choice: str, comment: str, request: Any = None
) -> tuple[str, str]:
    user = identify(state, request)
    battle_id = _battle_id(state)
    if choice not in VOTE_LABELS:
        raise gr.Error(f"Choose one of: {', '.join(VOTE_LABELS)}.")
    db = ctx.db()
    try:
        view = arena.battle_view(db, battle_id, user["id"])
        got = arena.cast_vote(db, battle_id, user["id"], view["turns"], VOTE_LABELS[choice], comment)
        view = arena.battle_view(db, battle_id, user["id"])
    except arena.ArenaError as exc:
        raise gr.Error(str(exc)) from None
    left = "" if got["votes_left"] is None else f" ({got['votes_left']} votes left in this campaign)"
    return _status(view, f"Vote recorded: {choice}{left}. "), ""


def end(ctx: AppContext, identify: Identify, state: dict[str, Any], request: Any = None) -> str:
    user = identify(state, request)
    try:
        arena.end_battle(ctx.db(), _battle_id(state), user["id"])
        return _status(arena.battle_view(ctx.db(), _battle_id(state), user["id"]))
    except arena.ArenaError as exc:
        raise gr.Error(str(exc)) from None


def signed_in_user(state: dict[str, Any], request: Any = None) -> dict[str, Any]:
    """The rater page's identity: whoever signed in on this page (kept server-side in gr.State)."""
    if not state or not state.get("user"):
        raise gr.Error("Sign in first.")
    return state["user"]


def app_user(ctx: AppContext) -> Identify:
    """The Arena tab's identity: the workbench login, which must hold the rater or admin role."""

    def identify(state: dict[str, Any], request: Any = None) -> dict[str, Any]:
        name = require(ctx, request, ARENA_ROLES)
        user = users.get_user(ctx.db(), name)
        return {k: user[k] for k in ("id", "name", "role")}  # type: ignore[index]

    return identify


# -- the battle panel (shared by the page and the tab) ----------------------------------------------


def battle_panel(ctx: AppContext, pool: BackendPool, identify: Identify, state: gr.State) -> gr.Dropdown:
    """Campaign picker, two chats, message box, vote and reveal: wired to the handlers above."""
    with gr.Row():
        campaign = gr.Dropdown([], label="Campaign", scale=2, elem_id="arena-campaign")
        start_btn = gr.Button("Start a new battle", variant="primary", scale=1, elem_id="arena-start")
    guide = gr.Markdown("Choose a campaign.", elem_id="arena-instructions")
    with gr.Row():
        chat_a = gr.Chatbot(label="Model A", height=360, elem_id="arena-chat-a")
        chat_b = gr.Chatbot(label="Model B", height=360, elem_id="arena-chat-b")
    with gr.Row():
        message = gr.Textbox(label="Your message", scale=4, lines=2, elem_id="arena-message")
        send_btn = gr.Button("Send", scale=1, elem_id="arena-send")
    with gr.Row():
        choice = gr.Radio(list(VOTE_LABELS), label="Which response is better?", scale=3, elem_id="arena-choice")
        comment = gr.Textbox(label="Comment (optional)", scale=2, elem_id="arena-comment")
        vote_btn = gr.Button("Submit vote", variant="primary", scale=1, elem_id="arena-vote")
    status = gr.Markdown("", elem_id="arena-status")
    end_btn = gr.Button("End battle and reveal the models", elem_id="arena-end")

    def on_start(state_: dict, campaign_: str, request: gr.Request) -> tuple:
        return start(ctx, identify, state_, campaign_, request)

    def on_send(state_: dict, message_: str, request: gr.Request) -> Iterator[tuple]:
        yield from send(ctx, pool, identify, state_, message_, request)

    def on_vote(state_: dict, choice_: str, comment_: str, request: gr.Request) -> tuple:
        return vote(ctx, identify, state_, choice_, comment_, request)

    def on_end(state_: dict, request: gr.Request) -> str:
        return end(ctx, identify, state_, request)

    campaign.change(lambda c: instructions_md(ctx, c), campaign, guide, api_name=False)
    start_btn.click(on_start, [state, campaign], [state, chat_a, chat_b, message, status], api_name="start")
    send_event = dict(fn=on_send, inputs=[state, message], outputs=[chat_a, chat_b, message, status],
                      concurrency_limit=8)
    send_btn.click(**send_event, api_name="send")
    message.submit(**send_event, api_name=False)
    vote_btn.click(on_vote, [state, choice, comment], [status, comment], api_name="vote", concurrency_limit=32)
    end_btn.click(on_end, state, status, api_name="end")
    return campaign


def build_page(ctx: AppContext | str | Path, pool: BackendPool | None = None) -> gr.Blocks:
    """The rater page: sign in (or redeem an invite), read the instructions, battle, vote."""
    ctx = ctx if isinstance(ctx, AppContext) else AppContext(Path(ctx))
    ctx.db()
    pool = pool or BackendPool()
    with gr.Blocks(title="Arena") as page:
        state = gr.State({})
        gr.Markdown("## Arena: compare two anonymous assistants")
        with gr.Column(visible=True) as login:
            with gr.Row():
                name = gr.Textbox(label="Name", elem_id="arena-name")
                password = gr.Textbox(label="Password", type="password", elem_id="arena-password")
                login_btn = gr.Button("Sign in", variant="primary", elem_id="arena-login")
            with gr.Accordion("I have an invite code", open=False):
                with gr.Row():
                    code = gr.Textbox(label="Invite code", elem_id="arena-code")
                    new_name = gr.Textbox(label="Choose a name", elem_id="arena-new-name")
                    new_password = gr.Textbox(label="Choose a password (8+ characters)", type="password")
                    join_btn = gr.Button("Create my account", elem_id="arena-join")
        with gr.Column(visible=False) as main:
            hello = gr.Markdown("", elem_id="arena-hello")
            campaign = battle_panel(ctx, pool, signed_in_user, state)

        def enter(new_state: dict) -> tuple:
            camps = campaign_choices(ctx)
            return (new_state, gr.Column(visible=False), gr.Column(visible=True),
                    f"Signed in as **{new_state['user']['name']}**.",
                    gr.Dropdown(choices=camps, value=camps[0] if camps else None))

        outs = [state, login, main, hello, campaign]
        login_btn.click(lambda s, n, p: enter(sign_in(ctx, s, n, p)), [state, name, password], outs, api_name="sign_in")
        password.submit(lambda s, n, p: enter(sign_in(ctx, s, n, p)), [state, name, password], outs, api_name=False)
        join_btn.click(lambda s, c, n, p: enter(join(ctx, s, c, n, p)), [state, code, new_name, new_password], outs,
                       api_name="join")
    return page


# -- admin handlers (the Arena tab of the workbench) -------------------------------------------------


def tab_campaigns(ctx: AppContext, request: gr.Request) -> gr.Dropdown:
    app_user(ctx)({}, request)
    return gr.Dropdown(choices=campaign_choices(ctx))


def admin_visible(ctx: AppContext, request: gr.Request) -> gr.Accordion:
    return gr.Accordion(visible=users.role_of(ctx.db(), getattr(request, "username", None)) == "admin")


def campaigns_table(ctx: AppContext, request: gr.Request) -> tuple[pd.DataFrame, gr.Dropdown]:
    require(ctx, request, EDIT_ROLES)
    camps = arena.list_campaigns(ctx.db())
    rows = [{**arena.campaign_progress(ctx.db(), c["name"]), "pairing": c["pairing"], "vote_cap": c["vote_cap"],
             "prompts": c["prompt_set"] or "free"} for c in camps]
    cols = ["campaign", "dimension", "status", "models", "prompts", "pairing", "vote_cap", "battles", "votes",
            "raters", "leaky_votes"]
    df = pd.DataFrame([{**r, "models": ", ".join(r["models"])} for r in rows], columns=cols)
    names = [c["name"] for c in camps]
    return df, gr.Dropdown(choices=["(all)", *names], value="(all)")


def create_campaign(ctx: AppContext, name: str, model_names: str, dimension: str, prompt_set: str, vote_cap: float,
                    pairing: str, max_turns: float, allow_test: bool, request: gr.Request) -> str:
    who = require(ctx, request, EDIT_ROLES)
    try:
        c = arena.create_campaign(ctx.db(), (name or "").strip(), [m.strip() for m in (model_names or "").split(",")
                                  if m.strip()], dimension, prompt_set=(prompt_set or "").strip() or None,
                                  vote_cap=int(vote_cap or 0), pairing=pairing, max_turns=int(max_turns or 3),
                                  created_by=who, allow_test_models=bool(allow_test))
    except arena.ArenaError as exc:
        raise gr.Error(str(exc)) from None
    return f"Created campaign **{c['name']}** with {len(c['models'])} models."


def progress_table(ctx: AppContext, campaign: str, request: gr.Request) -> pd.DataFrame:
    require(ctx, request, EDIT_ROLES)
    if not campaign or campaign == "(all)":
        return pd.DataFrame(columns=["model_a", "model_b", "votes"])
    return pd.DataFrame(arena.campaign_progress(ctx.db(), campaign)["pairs"], columns=["model_a", "model_b", "votes"])


def ratings_view(ctx: AppContext, campaign: str, method: str, rounds: float, include_leaks: bool,
                 request: gr.Request) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    """Ratings per dimension, the win-rate matrix, and Figure 2 (harmlessness vs helpfulness)."""
    require(ctx, request, EDIT_ROLES)
    df = arena.votes_frame(ctx.db(), campaign=None if campaign in (None, "", "(all)") else campaign,
                           exclude_leaks=not include_leaks)
    if df.empty:
        return pd.DataFrame(columns=["dimension", "model", "rating", "ci_low", "ci_high", "n"]), pd.DataFrame(), None
    by_dim = ratings.rate_by_dimension(df, method=method, rounds=int(rounds or 0), seed=0)
    table = pd.DataFrame([{"dimension": d, **r.to_dict()} for d, rs in by_dim.items() for r in rs]).round(1)
    table["provisional"] = table["provisional"].map(  # issue 16: flag ratings from few votes
        lambda p: f"provisional (< {ratings.PROVISIONAL_BELOW} votes)" if p else "")
    matrix = ratings.win_rate_matrix(df).round(3).reset_index(names="model")
    fig = None
    if "helpfulness" in by_dim and "harmlessness" in by_dim:
        fig = ratings.figure2(by_dim["helpfulness"], by_dim["harmlessness"])
    return table, matrix, fig


def make_invites(ctx: AppContext, count: float, campaign: str, request: gr.Request) -> str:
    who = require(ctx, request, EDIT_ROLES)
    try:
        codes = arena.create_invites(ctx.db(), int(count or 1), campaign=None if campaign in ("", "(all)", None)
                                     else campaign, created_by=who)
    except arena.ArenaError as exc:
        raise gr.Error(str(exc)) from None
    return "\n".join(codes)


def build(ctx: AppContext, pool: BackendPool | None = None) -> None:
    """The workbench's Arena tab: battles for raters and admins; campaigns and ratings for admins."""
    pool = pool or BackendPool()
    gr.Markdown("Raters can also use the rater page at [/arena/](/arena/), where invite codes are redeemed.")
    state = gr.State({})
    campaign = battle_panel(ctx, pool, app_user(ctx), state)
    on_page_load(bind(tab_campaigns, ctx), None, [campaign])
    with gr.Accordion("Campaigns, progress and ratings (admins)", open=False, visible=False) as admin:
        camps = gr.Dataframe(interactive=False, wrap=True, label="Campaigns")
        refresh = gr.Button("Refresh")
        with gr.Row():
            c_name = gr.Textbox(label="New campaign name")
            c_models = gr.Textbox(label="Models (comma-separated registered names)")
            c_dim = gr.Radio(list(arena.DIMENSIONS), value="helpfulness", label="Dimension")
        with gr.Row():
            c_prompts = gr.Textbox(label="Seed prompt set (empty: free chat)")
            c_cap = gr.Number(0, label="Vote cap per rater (0: none)", precision=0)
            c_pairing = gr.Radio(list(arena.PAIRINGS), value="uniform", label="Pairing")
            c_turns = gr.Number(3, label="Turns per battle", precision=0)
            c_test = gr.Checkbox(False, label="Allow test models (tiny: random weights, output is noise)")
            c_create = gr.Button("Create campaign", variant="primary")
        c_msg = gr.Markdown("")
        pick = gr.Dropdown(["(all)"], value="(all)", label="Campaign")
        pairs = gr.Dataframe(interactive=False, label="Votes per pair")
        with gr.Row():
            method = gr.Radio(list(ratings.METHODS), value="bt", label="Method")
            rounds = gr.Number(200, label="Bootstrap rounds", precision=0)
            leaks = gr.Checkbox(False, label="Include identity-leak turns")
            rate_btn = gr.Button("Compute ratings")
        table = gr.Dataframe(interactive=False, label="Ratings (95% bootstrap intervals)")
        matrix = gr.Dataframe(interactive=False, label="Win rate of row model against column model (ties half)")
        plot = gr.Plot(label="Harmlessness vs helpfulness (paper Figure 2)")
        build_rigor(ctx, pick)
        with gr.Row():
            inv_n = gr.Number(5, label="Invite codes to make", precision=0)
            inv_btn = gr.Button("Make invite codes")
        inv_out = gr.Textbox(label="Codes (shown once; each makes one rater account)", lines=4)

    on_page_load(bind(admin_visible, ctx), None, [admin])
    load_camps = dict(fn=bind(campaigns_table, ctx), inputs=None, outputs=[camps, pick])
    on_page_load(bind(campaigns_table, ctx), None, [camps, pick])
    refresh.click(**load_camps, api_name=False)
    c_create.click(bind(create_campaign, ctx), [c_name, c_models, c_dim, c_prompts, c_cap, c_pairing, c_turns, c_test],
                   c_msg, api_name=False).then(**load_camps)
    pick.change(bind(progress_table, ctx), pick, pairs, api_name=False)
    rate_btn.click(bind(ratings_view, ctx), [pick, method, rounds, leaks], [table, matrix, plot],
                   api_name=False)
    inv_btn.click(bind(make_invites, ctx), [inv_n, pick], inv_out, api_name=False)


def page_for(db_path: str | Path) -> gr.Blocks:
    """The rater page over a database path (what `ui.app` mounts at /arena)."""
    return build_page(AppContext(Path(db_path)))

