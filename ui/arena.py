"""The arena: raters chat with two anonymous models side by side and vote each turn; admins run campaigns.

Two faces: `build_page(...)` is the rater page, the only place battles happen (its own path; whoever
signed in at /login as a rater or admin arrives signed in, others sign in there with a password or a
single-use invite code), and `build(ctx)` is the admins' Arena page of the workbench (campaigns,
progress, ratings and invites; no battles). Handlers are plain
functions over `cai.arena`; the rater's identity and battle live in server-side `gr.State`, and the
identity is checked against the database on every call (a removed, demoted or re-passworded rater is
signed out). Refusals go to the status line, not to error badges over the panel; model text is shown
as text (`ui.common.chat_safe`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from cai import arena, engines, load_eta, users
from cai.arena import invites
from cai.backend_pool import BackendPool, TurnResult, context_overflow, shared_pool, stream_pair
from cai.evals import ratings
from cai.transcript import parse_hh
from ui.arena_rigor import RATING_COLUMNS, build_rigor, figure2_note
from ui.common import ARENA_ROLES, EDIT_ROLES, AppContext, bind, chat_safe, esc, on_page_load, require

VOTE_LABELS = {"A is better": "A", "B is better": "B", "Tie": "tie", "Both are bad": "bothbad"}
Identify = Callable[[dict[str, Any], Any], dict[str, Any]]
NO_CAMPAIGNS = ("**No campaign is open yet.** An admin creates one on the workbench's Arena page "
                "(*Campaigns, progress and ratings*) or with "
                "`cai arena campaign create NAME --models A,B --dimension helpfulness`; it then appears here.")
ANSWERING = "Both models are answering…"
# Turns answered at once: concurrent raters of one in-process model share batched generate calls and a served
# model batches on its server, so more raters at once means bigger batches, not a longer queue (#27).
SEND_CONCURRENCY = 64


class Refused(gr.Error):
    """A request the page turns down with a message in the status line (no error badges)."""


def refusal(exc: BaseException | str) -> str:
    text = exc if isinstance(exc, str) else exc.message if isinstance(exc, gr.Error) else str(exc)
    return f"⚠️ **Not done:** {text}"


# -- identity -----------------------------------------------------------------------------------------


def _client(request: Any) -> str | None:
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


def sign_in(ctx: AppContext, state: dict[str, Any], name: str, password: str, request: Any = None) -> dict[str, Any]:
    got = users.attempt_login(ctx.db(), (name or "").strip(), password or "", _client(request))
    if got.user is None:
        raise gr.Error(got.message)
    if got.user["role"] not in ARENA_ROLES:
        raise gr.Error("This account may not rate.")
    return {"user": {k: got.user[k] for k in ("id", "name", "role", "session_epoch")}}


def join(ctx: AppContext, state: dict[str, Any], code: str, name: str, password: str,
         request: Any = None) -> dict[str, Any]:
    code = (code or "").strip()
    if "invite=" in code:  # the whole invite link pasted into the box
        code = code.split("invite=", 1)[1].split("&", 1)[0]
    try:
        user = invites.redeem_invite(ctx.db(), code, (name or "").strip(), password or "", _client(request))
    except arena.ArenaError as exc:
        raise gr.Error(str(exc)) from None
    return {"user": {**user, "session_epoch": 0}}


def page_user(ctx: AppContext) -> Identify:
    """The rater page's identity: whoever signed in on this page, re-checked against the database on every
    call (still there, still a rater or admin, same password as at sign-in)."""

    def identify(state: dict[str, Any], request: Any = None) -> dict[str, Any]:
        held = (state or {}).get("user")
        if not held:
            raise Refused("sign in first.")
        user = users.session_user(ctx.db(), int(held["id"]), int(held.get("session_epoch") or 0))
        if user is None or user["role"] not in ARENA_ROLES:
            raise Refused("your session has ended (the account was removed, its role changed or its password "
                          "changed): reload the page and sign in again.")
        return user

    return identify


# -- rater handlers (plain functions: tests call them directly) --------------------------------------


def campaign_choices(ctx: AppContext, user_id: int | None = None) -> list[str]:
    return [c["name"] for c in arena.rater_campaigns(ctx.db(), user_id)]


def instructions_md(ctx: AppContext, campaign: str | None, user_id: int | None = None) -> str:
    camps = arena.rater_campaigns(ctx.db(), user_id)
    for c in camps:
        if c["name"] == campaign:
            return f"### {c['name']}: judge **{c['dimension']}**\n\n{c['instructions']}"
    return "Choose a campaign." if camps else NO_CAMPAIGNS


def _status(view: dict[str, Any], extra: str = "") -> str:
    if view["status"] == "ended":
        return f"{extra}**Battle over.** The models are named above their answers. Start a new battle to go on."
    if view["awaiting_vote"]:
        return f"{extra}Turn {view['turns']} of {view['max_turns']}: which response is better? Vote below."
    if view["seeded_prompt"]:
        return f"{extra}This battle starts from a prompt, shown in the message box: press **Send** to get the answers."
    if view["turns"] >= view["max_turns"]:
        return f"{extra}This battle is complete: end it to see which models you rated."
    return f"{extra}Turn {view['turns'] + 1} of {view['max_turns']}: type a message and press **Send**."


def _safe(chat: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": chat_safe(m["content"])} for m in chat]


def reveal_md(view: dict[str, Any] | None) -> str:
    if not view or view["status"] != "ended":
        return ""
    r = view["reveal"]
    return (f'<div class="cai-reveal">Model A was <b>{esc(r["model_a"])}</b> · '
            f'Model B was <b>{esc(r["model_b"])}</b></div>')


def _panels(view: dict[str, Any] | None) -> tuple[Any, Any]:
    """The two chat panels (hidden until the first battle starts), titled with the model names once the battle
    is over."""
    if view and view["status"] == "ended":
        r = view["reveal"]
        return (gr.Chatbot(_safe(view["chat_a"]), label=f"Model A: {r['model_a']}", visible=True),
                gr.Chatbot(_safe(view["chat_b"]), label=f"Model B: {r['model_b']}", visible=True))
    chats = (view["chat_a"], view["chat_b"]) if view else ([], [])
    return (gr.Chatbot(_safe(chats[0]), label="Model A", visible=True),
            gr.Chatbot(_safe(chats[1]), label="Model B", visible=True))


def _vote_controls(view: dict[str, Any] | None, clear: bool = True) -> tuple[Any, Any]:
    """The choice and the vote button, both enabled only while a complete turn awaits its vote.

    The choice is cleared when a turn starts (and after a vote), never when the answers finish: a choice made
    as the last words arrived used to be wiped by that final update, and the vote went out empty ("choose one
    of ..."). While the models answer, the choice is disabled, so nothing can be picked that a later update
    would clear."""
    ready = bool(view) and view["status"] == "open" and view["awaiting_vote"]  # type: ignore[index]
    choice = gr.Radio(value=None, interactive=ready) if clear else gr.Radio(interactive=ready)
    return choice, gr.Button(interactive=ready)


def start(ctx: AppContext, identify: Identify, state: dict[str, Any], campaign: str, request: Any = None) -> tuple:
    """Outputs: state, chat A, chat B, message, status, reveal, choice, vote button."""
    skip = tuple(gr.skip() for _ in range(7))
    try:
        user = identify(state, request)
        if not campaign:
            raise Refused("choose a campaign first.")
        view = arena.start_battle(ctx.db(), campaign, user["id"])
    except (Refused, arena.ArenaError) as exc:
        return (state, *skip[:3], refusal(exc), *skip[4:])
    state = {**state, "battle": view["battle_id"]}
    return (state, *_panels(view), view["seeded_prompt"] or "", _status(view), "", *_vote_controls(view))


def _battle_id(state: dict[str, Any]) -> int:
    if not state.get("battle"):
        raise Refused("start a battle first.")
    return int(state["battle"])


def _pairs(chat: list[dict[str, str]], message: str, text: str) -> list[dict[str, str]]:
    return _safe([*chat, {"role": "user", "content": message}, {"role": "assistant", "content": text}])


def send(
    ctx: AppContext, pool: BackendPool, identify: Identify, state: dict[str, Any], message: str, request: Any = None
) -> Iterator[tuple]:
    """Stream both answers into the two chats; the turn becomes votable once both are complete.

    Outputs: chat A, chat B, message, status, choice, vote button. A message sent while the models are
    answering is refused with a notice and stays in the box. If the stream ends early for any reason (the
    page closed, the server stopped the event, a crash), the unfinished turn is rolled back so it can be sent
    again."""
    cold: list[dict[str, Any]] = []
    try:
        user = identify(state, request)
        battle_id = _battle_id(state)
        job = arena.begin_turn(ctx.db(), battle_id, user["id"], message)
        job = engines.route_job(ctx.db(), job)  # models with a shared engine answer through it
        cold = [row for row in job.models if not pool.loaded(row)]  # first use: say what the wait is for
        if cold:  # the context check below loads the models: say so first (a first use converts, minutes)
            try:
                yield (gr.skip(), gr.skip(), gr.skip(), f"{ANSWERING} {load_eta.notice(cold[0])}",
                       gr.Radio(value=None, interactive=False), gr.Button(interactive=False))
            except GeneratorExit:  # the page went away while the models loaded: the turn can be sent again
                arena.abandon_turn(ctx.db(), job)
                raise
        overflow = context_overflow(job, pool)
        if overflow:
            arena.abandon_turn(ctx.db(), job)
            raise Refused(overflow)
        view = arena.battle_view(ctx.db(), battle_id, user["id"])
    except (Refused, arena.ArenaError) as exc:
        gr.Warning(refusal(exc).replace("**", ""))
        yield gr.skip(), gr.skip(), gr.skip(), refusal(exc), gr.skip(), gr.skip()
        return
    finished = False
    try:
        shown = parse_hh(job.prompt)[-2]["content"]
        chat_a, chat_b = view["chat_a"], view["chat_b"]
        off = gr.Button(interactive=False)
        waiting = ANSWERING + (f" {load_eta.notice(cold[0])}" if cold else "")
        yield (_pairs(chat_a, shown, ""), _pairs(chat_b, shown, ""), "", waiting,
               gr.Radio(value=None, interactive=False), off)
        result: TurnResult | None = None
        for update in stream_pair(job, pool):
            if isinstance(update, TurnResult):
                result = update
            else:
                yield (_pairs(chat_a, shown, update[0]), _pairs(chat_b, shown, update[1]), gr.skip(), ANSWERING,
                       gr.skip(), gr.skip())
        assert result is not None, "stream_pair ends with a TurnResult"
        done = arena.finish_turn(ctx.db(), job, result.text_a, result.text_b, seconds=result.seconds,
                                 error=result.error)
        finished = True
        view = arena.battle_view(ctx.db(), battle_id, user["id"])
        if not done["shown"]:
            msg = "One of the models failed to answer, so this battle has ended. Please start a new one."
            yield gr.skip(), gr.skip(), gr.skip(), refusal(msg), *_vote_controls(view, clear=False)
            return
        yield (_safe(view["chat_a"]), _safe(view["chat_b"]), gr.skip(), _status(view),
               *_vote_controls(view, clear=False))
    finally:
        if not finished:
            arena.abandon_turn(ctx.db(), job)


def vote(
    ctx: AppContext, identify: Identify, state: dict[str, Any], choice: str, comment: str, request: Any = None
) -> tuple:
    """Outputs: status, comment, reveal, chat A, chat B, choice, vote button."""
    db = ctx.db()
    try:
        user = identify(state, request)
        battle_id = _battle_id(state)
        if choice not in VOTE_LABELS:
            raise Refused(f"choose one of: {', '.join(VOTE_LABELS)}.")
        view = arena.battle_view(db, battle_id, user["id"])
        got = arena.cast_vote(db, battle_id, user["id"], view["turns"], VOTE_LABELS[choice], comment)
        view = arena.battle_view(db, battle_id, user["id"])
    except (Refused, arena.ArenaError) as exc:
        return refusal(exc), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    left = "" if got["votes_left"] is None else f" ({got['votes_left']} votes left in this campaign)"
    panels = _panels(view) if view["status"] == "ended" else (gr.skip(), gr.skip())
    goes_on = ""
    if view["status"] == "open":
        side = got["continued_with"].upper()
        goes_on = (f"Both models continue from answer {side}: once you send your next message, it is the earlier "
                   "reply in both panels. ")
    return (_status(view, f"Vote recorded: {choice}{left}. {goes_on}"), "", reveal_md(view), *panels,
            *_vote_controls(view))


END_LABEL = "End battle and reveal the models"


def end(ctx: AppContext, identify: Identify, state: dict[str, Any], request: Any = None) -> tuple:
    """Outputs: state, status, reveal, chat A, chat B, vote button, end button.

    A battle whose last answers have no vote yet is not ended on the first press: the status warns that the
    turn will go unrated and the button asks again ("End without voting"); a second press (or a vote) goes on."""
    skips = (gr.skip(),) * 5
    try:
        user = identify(state, request)
        battle_id = _battle_id(state)
        view = arena.battle_view(ctx.db(), battle_id, user["id"])
        if view["status"] == "open" and view["awaiting_vote"] and state.get("confirm_end") != battle_id:
            warn = (f"⚠️ **Turn {view['turns']} has no vote yet.** Vote on it first, or press **End without "
                    "voting** to end the battle and leave it unrated.")
            return ({**state, "confirm_end": battle_id}, warn, *skips[:4],
                    gr.Button(value="End without voting", variant="stop"))
        arena.end_battle(ctx.db(), battle_id, user["id"])
        view = arena.battle_view(ctx.db(), battle_id, user["id"])
    except (Refused, arena.ArenaError) as exc:
        return state, refusal(exc), *skips
    return ({**state, "confirm_end": None}, _status(view), reveal_md(view), *_panels(view),
            gr.Button(interactive=False), gr.Button(value=END_LABEL, variant="secondary"))


def fresh_campaigns(ctx: AppContext, identify: Identify, state: dict[str, Any], current: str | None,
                    request: Any = None) -> Any:
    """The campaign list as it is now (new campaigns appear, closed ones go), keeping the current pick."""
    try:
        user = identify(state, request)
    except Refused:
        return gr.skip()
    names = campaign_choices(ctx, user["id"] if user["role"] == "rater" else None)
    return gr.Dropdown(choices=names, value=current if current in names else (names[0] if names else None))


# -- the battle panel (shared by the page and the tab) ----------------------------------------------


def battle_panel(ctx: AppContext, pool: BackendPool, identify: Identify, state: gr.State) -> gr.Dropdown:
    """Campaign picker, two chats, message box, vote and reveal: wired to the handlers above."""
    with gr.Row():
        campaign = gr.Dropdown([], label="Campaign", scale=2, elem_id="arena-campaign")
        start_btn = gr.Button("Start a new battle", variant="primary", scale=1, elem_id="arena-start")
    guide = gr.Markdown("Choose a campaign.", elem_id="arena-instructions")
    reveal = gr.HTML("", elem_id="arena-reveal")
    with gr.Row():  # hidden until a battle starts: two empty chats cost the page ~0.1 s to build at sign-in
        chat_a = gr.Chatbot(label="Model A", height=360, elem_id="arena-chat-a", visible=False)
        chat_b = gr.Chatbot(label="Model B", height=360, elem_id="arena-chat-b", visible=False)
    with gr.Row():
        message = gr.Textbox(label="Your message", scale=4, lines=2, elem_id="arena-message")
        send_btn = gr.Button("Send", scale=1, elem_id="arena-send")
    with gr.Row():
        choice = gr.Radio(list(VOTE_LABELS), label="Which response is better?", scale=3, elem_id="arena-choice",
                          interactive=False)
        comment = gr.Textbox(label="Comment (optional)", scale=2, elem_id="arena-comment")
        vote_btn = gr.Button("Submit vote", variant="primary", scale=1, elem_id="arena-vote", interactive=False)
    status = gr.Markdown("", elem_id="arena-status")
    end_btn = gr.Button(END_LABEL, elem_id="arena-end")

    def on_start(state_: dict, campaign_: str, request: gr.Request) -> tuple:
        return start(ctx, identify, state_, campaign_, request)

    def on_send(state_: dict, message_: str, request: gr.Request) -> Iterator[tuple]:
        yield from send(ctx, pool, identify, state_, message_, request)

    def on_vote(state_: dict, choice_: str, comment_: str, request: gr.Request) -> tuple:
        return vote(ctx, identify, state_, choice_, comment_, request)

    def on_end(state_: dict, request: gr.Request) -> tuple:
        return end(ctx, identify, state_, request)

    def on_focus(state_: dict, current: str | None, request: gr.Request) -> Any:
        return fresh_campaigns(ctx, identify, state_, current, request)

    def on_pick(state_: dict, campaign_: str | None, request: gr.Request) -> str:
        try:
            user = identify(state_, request)
        except Refused:
            return instructions_md(ctx, campaign_)
        return instructions_md(ctx, campaign_, user["id"] if user["role"] == "rater" else None)

    plain_end = dict(fn=lambda: gr.Button(value=END_LABEL, variant="secondary"), inputs=None, outputs=end_btn,
                     api_name=False, show_progress="hidden", queue=False)
    campaign.change(on_pick, [state, campaign], guide, api_name=False)
    campaign.focus(on_focus, [state, campaign], campaign, api_name=False, show_progress="hidden")
    start_btn.click(on_focus, [state, campaign], campaign, api_name=False, show_progress="hidden").then(
        on_start, [state, campaign], [state, chat_a, chat_b, message, status, reveal, choice, vote_btn],
        api_name="start").then(**plain_end)
    send_event = dict(fn=on_send, inputs=[state, message], outputs=[chat_a, chat_b, message, status, choice, vote_btn],
                      concurrency_limit=SEND_CONCURRENCY)
    send_btn.click(**send_event, api_name="send")
    message.submit(**send_event, api_name=False)
    vote_btn.click(on_vote, [state, choice, comment], [status, comment, reveal, chat_a, chat_b, choice, vote_btn],
                   api_name="vote", concurrency_limit=32).then(**plain_end)
    end_btn.click(on_end, state, [state, status, reveal, chat_a, chat_b, vote_btn, end_btn], api_name="end")
    return campaign


def build_page(ctx: AppContext | str | Path, pool: BackendPool | None = None,
               session: Callable[[Any], dict[str, Any] | None] | None = None) -> gr.Blocks:
    """The rater page: sign in (or redeem an invite), read the instructions, battle, vote. With `session`
    (the request's user from the workbench sign-in, or None), a rater or admin signed in there arrives
    signed in here."""
    ctx = ctx if isinstance(ctx, AppContext) else AppContext(Path(ctx))
    ctx.db()
    pool = pool or shared_pool()
    with gr.Blocks(title="Arena") as page:
        state = gr.State({})
        gr.Markdown("## Arena: compare two anonymous assistants")
        # With sessions, the load event shows the sign-in form only to visitors who are not signed in: a rater
        # arriving from /login never has the browser build (then hide) a form they do not need.
        with gr.Column(visible=session is None) as login:
            with gr.Row():
                name = gr.Textbox(label="Name", elem_id="arena-name")
                password = gr.Textbox(label="Password", type="password", elem_id="arena-password")
                login_btn = gr.Button("Sign in", variant="primary", elem_id="arena-login")
            with gr.Accordion("I have an invite code", open=False) as invite_box:
                with gr.Row():
                    code = gr.Textbox(label="Invite code", elem_id="arena-code")
                    new_name = gr.Textbox(label="Choose a name", elem_id="arena-new-name")
                    new_password = gr.Textbox(label="Choose a password (8+ characters)", type="password")
                    join_btn = gr.Button("Create my account", elem_id="arena-join")
        with gr.Column(visible=False) as main:
            hello = gr.Markdown("", elem_id="arena-hello")
            campaign = battle_panel(ctx, pool, page_user(ctx), state)

        def enter(new_state: dict) -> tuple:
            camps = campaign_choices(ctx, new_state["user"]["id"])
            return (new_state, gr.Column(visible=False), gr.Column(visible=True),
                    f"Signed in as **{new_state['user']['name']}**. [Log out](/logout)",
                    gr.Dropdown(choices=camps, value=camps[0] if camps else None))

        def on_sign_in(s: dict, n: str, p: str, request: gr.Request) -> tuple:
            return enter(sign_in(ctx, s, n, p, request))

        outs = [state, login, main, hello, campaign]
        if session is not None:
            def arrive(s: dict, request: gr.Request) -> tuple:
                user = session(request)
                if user is None or user["role"] not in ARENA_ROLES:
                    return gr.skip(), gr.Column(visible=True), gr.skip(), gr.skip(), gr.skip()
                return enter({"user": {k: user[k] for k in ("id", "name", "role", "session_epoch")}})

            page.load(arrive, state, outs, api_name=False, show_progress="hidden", queue=False)
        def on_invite(request: gr.Request) -> tuple[Any, Any]:
            return invite_from_link(request)

        page.load(on_invite, None, [code, invite_box], api_name=False, show_progress="hidden", queue=False)
        login_btn.click(on_sign_in, [state, name, password], outs, api_name="sign_in")
        password.submit(on_sign_in, [state, name, password], outs, api_name=False)
        def on_join(s: dict, c: str, n: str, p: str, request: gr.Request) -> tuple:
            return enter(join(ctx, s, c, n, p, request))

        join_btn.click(on_join, [state, code, new_name, new_password], outs, api_name="join")
    return page


# -- admin handlers (the Arena page of the workbench) ------------------------------------------------


def admin_visible(ctx: AppContext, request: gr.Request) -> gr.Accordion:
    """Shown to admins only, and open while there is no campaign yet (that is where one is made)."""
    admin = users.role_of(ctx.db(), getattr(request, "username", None)) == "admin"
    return gr.Accordion(visible=admin, open=admin and not arena.list_campaigns(ctx.db()))


CAMPAIGN_COLUMNS = ["campaign", "dimension", "status", "models", "prompts", "pairing", "vote_cap", "battles",
                    "votes", "raters", "leaky_votes"]


def campaigns_table(ctx: AppContext, request: gr.Request) -> tuple[pd.DataFrame, gr.Dropdown]:
    require(ctx, request, EDIT_ROLES)
    camps = arena.list_campaigns(ctx.db())
    rows = [{**arena.campaign_progress(ctx.db(), c["name"]), "pairing": c["pairing"], "vote_cap": c["vote_cap"],
             "prompts": c["prompt_set"] or "free"} for c in camps]
    cols = CAMPAIGN_COLUMNS
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


PAIR_COLUMNS = ["model_a", "model_b", "votes"]


def progress_table(ctx: AppContext, campaign: str, request: gr.Request) -> pd.DataFrame:
    require(ctx, request, EDIT_ROLES)
    if not campaign or campaign == "(all)":
        return pd.DataFrame(columns=["model_a", "model_b", "votes"])
    return pd.DataFrame(arena.campaign_progress(ctx.db(), campaign)["pairs"], columns=["model_a", "model_b", "votes"])


def ratings_view(ctx: AppContext, campaign: str, method: str, rounds: float, include_leaks: bool,
                 request: gr.Request) -> tuple[pd.DataFrame, pd.DataFrame, Any, str]:
    """Ratings per dimension, the win-rate matrix, Figure 2 (harmlessness vs helpfulness; hidden until both
    dimensions have votes) and the line that says what Figure 2 waits for ("" once it shows)."""
    require(ctx, request, EDIT_ROLES)
    df = arena.votes_frame(ctx.db(), campaign=None if campaign in (None, "", "(all)") else campaign,
                           exclude_leaks=not include_leaks)
    if df.empty:
        return (pd.DataFrame(columns=RATING_COLUMNS), pd.DataFrame(columns=["model"]), gr.Plot(None, visible=False),
                figure2_note(()))
    by_dim = ratings.rate_by_dimension(df, method=method, rounds=int(rounds or 0), seed=0)
    table = pd.DataFrame([{"dimension": d, **r.to_dict()} for d, rs in by_dim.items() for r in rs]).round(1)
    table["provisional"] = table["provisional"].map(  # issue 16: flag ratings from few votes
        lambda p: f"provisional (< {ratings.PROVISIONAL_BELOW} votes)" if p else "")
    matrix = ratings.win_rate_matrix(df).round(3).reset_index(names="model")
    fig = None
    if "helpfulness" in by_dim and "harmlessness" in by_dim:
        fig = ratings.figure2(by_dim["helpfulness"], by_dim["harmlessness"])
    return table, matrix, gr.Plot(fig, visible=fig is not None), "" if fig is not None else figure2_note(by_dim)



INVITE_PATH = "/arena/?invite="


def origin(request: Any) -> str:
    """The address the admin reached the app at (scheme and host, as a proxy forwards them); "" if unknown."""
    headers = getattr(request, "headers", None) or {}
    host = headers.get("x-forwarded-host") or headers.get("host")
    if not host:
        return ""
    return f"{headers.get('x-forwarded-proto') or 'http'}://{host}"


def invite_link(code: str, base: str = "") -> str:
    """The link that opens the rater page with the invite code filled in."""
    return f"{base}{INVITE_PATH}{code}"


def make_invites(ctx: AppContext, count: float, campaign: str, request: gr.Request,
                 days: float | None = None) -> str:
    """One link a line (`/arena/?invite=CODE` on this app's address): send each to one rater."""
    who = require(ctx, request, EDIT_ROLES)
    try:
        codes = invites.create_invites(ctx.db(), int(count or 1), campaign=None if campaign in ("", "(all)", None)
                                     else campaign, created_by=who, expires_days=float(days or invites.INVITE_DAYS))
    except arena.ArenaError as exc:
        raise gr.Error(str(exc)) from None
    base = origin(request)
    return "\n".join(invite_link(c, base) for c in codes)


def invite_from_link(request: Any) -> tuple[Any, Any]:
    """On the rater page's load: the code from an invite link (?invite=CODE) in the code box, its section open."""
    params = getattr(request, "query_params", None) or {}
    code = (params.get("invite") or "").strip()
    if not code:
        return gr.skip(), gr.skip()
    return gr.Textbox(value=code), gr.Accordion(open=True)


def build(ctx: AppContext, pool: BackendPool | None = None) -> None:
    """The workbench's Arena page (admins only): campaigns, progress, ratings and invites. `pool` is unused
    (battles are on the rater page); it stays for callers that pass one."""
    gr.Markdown("Battles happen on the rater page, [/arena/](/arena/): raters and admins who signed in here "
                "arrive there signed in, and invite codes are redeemed there.")
    with gr.Accordion("Campaigns, progress and ratings (admins)", open=False, visible=False) as admin:
        camps = gr.Dataframe(pd.DataFrame(columns=CAMPAIGN_COLUMNS), interactive=False, wrap=True, label="Campaigns")
        refresh = gr.Button("Refresh")
        with gr.Row():
            c_name = gr.Textbox(label="New campaign name")
            c_models = gr.Textbox(label="Models (comma-separated registered names)")
            c_dim = gr.Radio(list(arena.DIMENSIONS), value="helpfulness", label="Dimension")
        with gr.Row():
            c_prompts = gr.Textbox(label="Seed prompt set (empty: free chat)")
            c_cap = gr.Number(0, label="Vote cap per rater (0: none)", precision=0)
            c_pairing = gr.Radio(list(ratings.PAIRINGS), value="uniform", label="Pairing")
            c_turns = gr.Number(3, label="Turns per battle", precision=0)
            c_test = gr.Checkbox(False, label="Allow test models (tiny: random weights, output is noise)")
            c_create = gr.Button("Create campaign", variant="primary")
        c_msg = gr.Markdown("")
        pick = gr.Dropdown(["(all)"], value="(all)", label="Campaign")
        pairs = gr.Dataframe(pd.DataFrame(columns=PAIR_COLUMNS), interactive=False, label="Votes per pair",
                             elem_id="arena-pairs")
        with gr.Row():
            method = gr.Radio(list(ratings.METHODS), value="bt", label="Method")
            rounds = gr.Number(200, label="Bootstrap rounds", precision=0)
            leaks = gr.Checkbox(False, label="Include identity-leak turns")
            rate_btn = gr.Button("Compute ratings")
        table = gr.Dataframe(pd.DataFrame(columns=RATING_COLUMNS), interactive=False,
                             label="Ratings (95% bootstrap intervals; none below "
                                   f"{ratings.INTERVAL_MIN_VOTES} votes)", elem_id="arena-ratings")
        matrix = gr.Dataframe(pd.DataFrame(columns=["model"]), interactive=False,  # no placeholder "1 2 3" header
                              label="Win rate of row model against column model (ties half)")
        plot_note = gr.Markdown(figure2_note(()), elem_id="arena-figure2-note")
        plot = gr.Plot(label="Harmlessness vs helpfulness (paper Figure 2)", visible=False, elem_id="arena-figure2")
        build_rigor(ctx, pick)
        with gr.Row():
            inv_n = gr.Number(5, label="Invite links to make", precision=0)
            inv_days = gr.Number(invites.INVITE_DAYS, label="Days until they expire", minimum=0.01)
            inv_btn = gr.Button("Make invite links")
        inv_out = gr.Textbox(label="Invite links (shown once; each makes one rater account, for the campaign picked "
                                   "above or for any campaign with (all)): copy them and send one to each rater",
                             lines=4, buttons=["copy"], elem_id="arena-invites")

    on_page_load(bind(admin_visible, ctx), None, [admin])
    load_camps = dict(fn=bind(campaigns_table, ctx), inputs=None, outputs=[camps, pick])
    on_page_load(bind(campaigns_table, ctx), None, [camps, pick])
    refresh.click(**load_camps, api_name=False)
    c_create.click(bind(create_campaign, ctx), [c_name, c_models, c_dim, c_prompts, c_cap, c_pairing, c_turns, c_test],
                   c_msg, api_name=False).then(**load_camps)
    pick.change(bind(progress_table, ctx), pick, pairs, api_name=False)
    rate_btn.click(bind(ratings_view, ctx), [pick, method, rounds, leaks], [table, matrix, plot, plot_note],
                   api_name=False)
    inv_btn.click(bind(make_invites, ctx), [inv_n, pick, inv_days], inv_out, api_name=False)


def page_for(db_path: str | Path, pool: BackendPool | None = None,
             session: Callable[[Any], dict[str, Any] | None] | None = None) -> gr.Blocks:
    """The rater page over a database path (what `ui.app` mounts at /arena); `session(request)` gives the
    user signed in at /login, if any."""
    return build_page(AppContext(Path(db_path)), pool, session)

