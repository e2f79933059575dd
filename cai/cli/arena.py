"""`cai ratings` and `cai arena ...`: rate battles, run rating campaigns, hand out invites, export preferences.

Thin over `cai.arena` and `cai.evals.ratings`: `cai ratings --votes FILE` rates any FastChat-format
battles file, and without `--votes` it rates the workbench's own arena votes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cai import arena, store
from cai.arena import invites
from cai.cli import add_common, emit, table
from cai.evals import ratings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's commands to the `cai` parser."""
    p = sub.add_parser("ratings", help="Elo, Bradley-Terry or Rao-Kupper ratings with bootstrap intervals.")
    p.add_argument("--votes", help="Battles file (FastChat format: model_a, model_b, winner): JSON, JSONL, CSV, Parquet.")
    p.add_argument("--campaign", help="Without --votes: rate this arena campaign's votes (default: all campaigns).")
    p.add_argument("--dimension", help="Only votes on this dimension (helpfulness, harmlessness).")
    p.add_argument("--method", choices=list(ratings.METHODS), default="bt",
                   help="Online Elo, Bradley-Terry MLE, or Rao-Kupper (rk: ties are their own outcome).")
    p.add_argument("--style-control", action="store_true",
                   help="BT with answer length and markdown counts as covariates; adds rating_raw and rank changes.")
    p.add_argument("--provisional-below", type=int, default=ratings.PROVISIONAL_BELOW,
                   help=f"Flag ratings from fewer votes than this as provisional (default: {ratings.PROVISIONAL_BELOW}).")
    p.add_argument("--drop-k", action="store_true",
                   help="Also find how few removed votes change the top model (JSON: {ratings, drop_k}).")
    p.add_argument("--bootstrap", type=int, default=100, help="Bootstrap rounds for the 95%% intervals (0: none).")
    p.add_argument("--seed", type=int, default=0, help="Bootstrap seed.")
    p.add_argument("--k", type=float, default=4.0, help="Elo K factor.")
    p.add_argument("--scale", type=float, default=400.0, help="Rating points per factor of `base` in odds.")
    p.add_argument("--base", type=float, default=10.0, help="Odds base of the rating scale.")
    p.add_argument("--init", type=float, default=1000.0, help="Initial (Elo) / mean (BT) rating.")
    p.add_argument("--include-leaks", action="store_true", help="Keep votes on turns flagged as identity leaks.")
    add_common(p)
    p.set_defaults(func=cmd_ratings)

    a = sub.add_parser("arena", help="Blind A/B rating campaigns: campaigns, invites, export.")
    asub = a.add_subparsers(dest="arena_command", metavar="ACTION")
    asub.required = True

    c = asub.add_parser("campaign", help="Create, list, show, close or reopen campaigns.")
    csub = c.add_subparsers(dest="campaign_command", metavar="ACTION")
    csub.required = True
    cc = csub.add_parser("create", help="Create a campaign.")
    cc.add_argument("name", nargs="?", default=None,
                    help="Campaign name (raters see it); with --from-compare, the names' prefix (default compare-ID).")
    cc.add_argument("--models", default=None, help="Comma-separated registered model names (at least two).")
    cc.add_argument("--dimension", default=None, choices=arena.DIMENSIONS, help="What raters judge.")
    cc.add_argument("--from-compare", type=int, default=None, metavar="RUN_ID",
                    help="One campaign per dimension of this compare run: its models, its prompts, one turn.")
    cc.add_argument("--prompts", default=None, help="Prompt set that seeds each battle (default: free chat).")
    cc.add_argument("--vote-cap", type=int, default=0, help="Votes per rater in this campaign (0: no cap).")
    cc.add_argument("--pairing", choices=ratings.PAIRINGS, default="uniform",
                    help="uniform, or uncertain: favour pairs whose order is least certain.")
    cc.add_argument("--instructions-file", default=None, help="Markdown instructions (default: the built-in text).")
    cc.add_argument("--max-turns", type=int, default=3, help="Turns (votes) per battle.")
    cc.add_argument("--max-new-tokens", type=int, default=128, help="Longest answer, in tokens.")
    cc.add_argument("--temperature", type=float, default=0.7, help="Sampling temperature (0: greedy).")
    cc.add_argument("--max-message-chars", type=int, default=arena.MAX_MESSAGE_CHARS,
                    help="Longest message a rater may send, in characters (longer ones are refused).")
    cc.add_argument("--allow-test-models", action="store_true",
                    help="Allow test models such as tiny (random weights, output is noise) in the campaign.")
    add_common(cc)
    cc.set_defaults(func=cmd_campaign_create)
    cl = csub.add_parser("list", help="List campaigns.")
    add_common(cl)
    cl.set_defaults(func=cmd_campaign_list)
    cs = csub.add_parser("show", help="A campaign's settings and progress (votes, raters, votes per pair).")
    cs.add_argument("name", help="Campaign name.")
    add_common(cs)
    cs.set_defaults(func=cmd_campaign_show)
    for action, status in (("close", "closed"), ("open", "active")):
        cx = csub.add_parser(action, help=f"Mark a campaign {status}.")
        cx.add_argument("name", help="Campaign name.")
        add_common(cx, json_flag=False)
        cx.set_defaults(func=cmd_campaign_status, status=status)

    i = asub.add_parser("invite", help="Single-use invite codes that create rater accounts.")
    i.add_argument("--count", type=int, default=1, help="How many codes.")
    i.add_argument("--campaign", default=None,
                   help="Campaign the invites are for: the raters they make may rate only that campaign.")
    i.add_argument("--expires-days", type=float, default=invites.INVITE_DAYS,
                   help=f"Days until unused codes expire (default {invites.INVITE_DAYS:g}).")
    i.add_argument("--note", default="", help="A note kept with the codes (who they were sent to).")
    add_common(i)
    i.set_defaults(func=cmd_invite)

    e = asub.add_parser("export", help="Decisive votes as a preference dataset (prompt, chosen, rejected).")
    e.add_argument("out", help="Output file: .jsonl, .csv or .parquet.")
    e.add_argument("--campaign", default=None, help="Only this campaign.")
    e.add_argument("--dimension", default=None, help="Only this dimension.")
    e.add_argument("--include-leaks", action="store_true", help="Keep votes on turns flagged as identity leaks.")
    e.add_argument("--format", choices=["trl", "fastchat", "140k"], default="trl",
                   help="trl: decisive votes as prompt/chosen/rejected (default); fastchat: every vote as a "
                        "FastChat battle; 140k: every vote in arena-human-preference-140k style.")
    add_common(e)
    e.set_defaults(func=cmd_export)

    r = asub.add_parser("raters", help="Rater quality: agreement with others, Krippendorff's alpha, gold accuracy, flags.")
    r.add_argument("--campaign", default=None, help="Only this campaign.")
    add_common(r)
    r.set_defaults(func=cmd_raters)
    for verb, text in (("exclude", "Leave a rater's votes out of ratings (kept in the database)."),
                       ("include", "Count an excluded rater's votes again.")):
        x = asub.add_parser(verb, help=text)
        x.add_argument("rater", help="Rater (user) name.")
        x.add_argument("--campaign", default=None, help="Only in this campaign (default: every campaign).")
        if verb == "exclude":
            x.add_argument("--reason", default="", help="Why (kept with the exclusion).")
        add_common(x)
        x.set_defaults(func=cmd_exclude if verb == "exclude" else cmd_include)
    g = asub.add_parser("gold", help="Add gold pairs (prompt, better, worse: JSONL or CSV) to a campaign.")
    g.add_argument("file", help="Gold pairs file: .jsonl or .csv with columns prompt, better, worse.")
    g.add_argument("--campaign", required=True, help="Campaign the pairs belong to.")
    g.add_argument("--rate", type=float, default=None, help="Share of new battles that are gold pairs (0 to 0.5).")
    add_common(g)
    g.set_defaults(func=cmd_gold)
    p = asub.add_parser("prefs", help="Decisive votes as a stored human preference set (for pm, agreement, discover).")
    p.add_argument("name", help="Name of the new preference set.")
    p.add_argument("--campaign", default=None, help="Only this campaign.")
    p.add_argument("--dimension", default=None, help="Only this dimension.")
    p.add_argument("--include-leaks", action="store_true", help="Keep votes on turns flagged as identity leaks.")
    add_common(p)
    p.set_defaults(func=cmd_prefs)


def _params(args: argparse.Namespace) -> ratings.RatingParams:
    return ratings.RatingParams(k=args.k, scale=args.scale, base=args.base, init=args.init)


def cmd_ratings(args: argparse.Namespace) -> int:
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if args.votes:
        df = ratings.read_votes(args.votes)
    else:
        df = arena.votes_frame(store.connect(args.db), campaign=args.campaign, exclude_leaks=not args.include_leaks)
    if args.dimension:
        if "dimension" not in df.columns:
            raise ValueError(f"{args.votes}: no dimension column, so --dimension cannot select votes")
        df = df[df["dimension"] == args.dimension]
    elif "dimension" in df.columns and df["dimension"].nunique() > 1:
        dims = ", ".join(sorted(map(str, df["dimension"].unique())))
        raise ValueError(f"the votes cover several dimensions ({dims}): choose one with --dimension")
    if args.provisional_below < 0:
        raise ValueError(f"--provisional-below must be >= 0, got {args.provisional_below}")
    rated = ratings.rate(df, args.method, args.bootstrap, args.seed, _params(args),
                         style_control=args.style_control, provisional_below=args.provisional_below)
    rows = [r.to_dict() for r in rated]
    cols = ["model", "rating", "ci_low", "ci_high", "n", "provisional", "note"]
    if args.style_control:
        cols += ["rating_raw", "rank", "rank_raw", "rank_change"]
    if not args.drop_k:
        emit(args, rows, lambda rs: table([_rounded(r) for r in rs], cols))
        return 0
    method = "bt" if args.method == "elo" else args.method
    df = df.reset_index(drop=True)
    found = ratings.drop_k(df, method, _params(args)).to_dict() if len(df) else None
    if found and "vote_id" in df.columns:  # database votes: name the removed votes by id
        found["removed_vote_ids"] = [int(df["vote_id"].iloc[i]) for i in found["removed"]]
    emit(args, {"ratings": rows, "drop_k": found},
         lambda d: table([_rounded(r) for r in d["ratings"]], cols) + "\n" + _drop_k_text(d["drop_k"]))
    return 0


def _drop_k_text(d: dict[str, Any] | None) -> str:
    if not d or d["k"] is None:
        return "drop-k: no removal order tried changed the top model"
    return (f"drop-k ({d['method']}, an upper bound): removing {d['k']} vote(s) puts {d['challenger']} "
            f"level with or above {d['top']}")


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}


def cmd_campaign_create(args: argparse.Namespace) -> int:
    if args.from_compare is not None:
        return _campaigns_from_compare(args)
    missing = [flag for flag, value in (("NAME", args.name), ("--models", args.models),
                                        ("--dimension", args.dimension)) if not value]
    if missing:
        raise ValueError(f"give {', '.join(missing)} (or --from-compare RUN_ID)")
    instructions = None
    if args.instructions_file:
        from cai.files import read_text

        instructions = read_text(args.instructions_file, 100_000)
    camp = arena.create_campaign(
        store.connect(args.db),
        args.name,
        [m.strip() for m in args.models.split(",") if m.strip()],
        args.dimension,
        prompt_set=args.prompts,
        vote_cap=args.vote_cap,
        pairing=args.pairing,
        instructions=instructions,
        max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        max_message_chars=args.max_message_chars,
        allow_test_models=args.allow_test_models,
    )
    emit(args, camp, lambda c: f"created campaign {c['name']!r} (id {c['id']}): {', '.join(c['models'])}")
    return 0


def _campaigns_from_compare(args: argparse.Namespace) -> int:
    from cai.arena.compare import from_compare

    given = [flag for flag, value in (("--models", args.models), ("--dimension", args.dimension),
                                      ("--prompts", args.prompts)) if value]
    if given:
        raise ValueError(f"--from-compare takes the models, dimensions and prompts of the compare run: drop "
                         f"{', '.join(given)}")
    made = from_compare(store.connect(args.db), args.from_compare, name=args.name, vote_cap=args.vote_cap,
                        pairing=args.pairing, allow_test_models=args.allow_test_models)
    emit(args, made, lambda cs: "\n".join(f"created campaign {c['name']!r} (id {c['id']}, {c['dimension']}, "
                                          f"{c['prompts']} prompts): {', '.join(c['models'])}" for c in cs))
    return 0


def cmd_campaign_list(args: argparse.Namespace) -> int:
    db = store.connect(args.db)
    rows = []
    for c in arena.list_campaigns(db):
        n = db.execute("select count(*) from votes v join battles b on b.id = v.battle_id where b.campaign_id = ?",
                       [c["id"]]).fetchone()[0]
        rows.append({**c, "models": ",".join(c["models"]), "votes": n, "prompts": c["prompt_set"] or "free"})
    cols = ["name", "dimension", "status", "models", "prompts", "pairing", "vote_cap", "votes"]
    emit(args, rows, lambda rs: table(rs, cols))
    return 0


def cmd_campaign_show(args: argparse.Namespace) -> int:
    db = store.connect(args.db)
    camp = arena.get_campaign(db, args.name)
    data = {"settings": camp, "progress": arena.campaign_progress(db, args.name)}

    def text(d: dict[str, Any]) -> str:
        p = d["progress"]
        head = (f"{p['campaign']} ({p['dimension']}, {p['status']}): {p['votes']} votes from {p['raters']} raters "
                f"in {p['battles']} battles; {p['leaky_votes']} on leak-flagged turns")
        return head + "\n" + table(p["pairs"], ["model_a", "model_b", "votes"])

    emit(args, data, text)
    return 0


def cmd_campaign_status(args: argparse.Namespace) -> int:
    arena.set_campaign_status(store.connect(args.db), args.name, args.status)
    print(f"campaign {args.name!r} is now {args.status}")
    return 0


def cmd_invite(args: argparse.Namespace) -> int:
    codes = invites.create_invites(store.connect(args.db), args.count, campaign=args.campaign, note=args.note,
                                expires_days=args.expires_days)
    emit(args, codes, lambda cs: "\n".join(cs))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() not in (".jsonl", ".csv", ".parquet"):
        raise ValueError(f"{out}: the output must end in .jsonl, .csv or .parquet")
    db = store.connect(args.db)
    df = arena.votes_frame(db, campaign=args.campaign, dimension=args.dimension, exclude_leaks=not args.include_leaks)
    if args.format != "trl":
        return _export_votes(args, out, df)
    pairs = arena.preference_pairs(df)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        from cai.csv_out import write_csv

        write_csv(pairs, out)
    elif out.suffix.lower() == ".parquet":
        pairs.to_parquet(out, index=False)
    else:
        with out.open("w", encoding="utf-8") as fh:
            for rec in pairs.to_dict(orient="records"):
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    summary = {"path": str(out), "pairs": len(pairs), "votes": len(df), "skipped_ties": len(df) - len(pairs)}
    emit(args, summary, lambda s: f"wrote {s['pairs']} preference pairs to {s['path']} "
                                  f"({s['skipped_ties']} tie votes left out)")
    return 0


def _export_votes(args: argparse.Namespace, out: Path, df: Any) -> int:
    """Every vote as a FastChat battle or an arena-human-preference-140k row."""
    import pandas as pd

    from cai.arena.export import rows_140k
    from cai.csv_out import write_csv
    from cai.transcript import parse_hh

    if args.format == "140k":
        rows = rows_140k(df)
    else:
        rows = [{"question_id": f"vote-{v['vote_id']}", "model_a": v["model_a"], "model_b": v["model_b"],
                 "winner": v["winner"], "judge": v["user"], "turn": int(v["turn"]), "anony": True,
                 "conversation_a": [*parse_hh(v["prompt"])[:-1], {"role": "assistant", "content": str(v["response_a"] or "").strip()}],
                 "conversation_b": [*parse_hh(v["prompt"])[:-1], {"role": "assistant", "content": str(v["response_b"] or "").strip()}],
                 "dimension": v["dimension"], "tstamp": v["created_at"]} for v in df.to_dict(orient="records")]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".jsonl":
        with out.open("w", encoding="utf-8") as fh:
            for rec in rows:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    else:
        frame = pd.DataFrame(rows)
        nested = [c for c in frame.columns if frame[c].map(lambda x: isinstance(x, (list, dict))).any()]
        for c in nested:  # CSV and Parquet cells hold the nested fields as JSON text
            frame[c] = frame[c].map(lambda x: json.dumps(x, ensure_ascii=False))
        write_csv(frame, out) if out.suffix.lower() == ".csv" else frame.to_parquet(out, index=False)
    emit(args, {"path": str(out), "votes": len(rows), "format": args.format},
         lambda s: f"wrote {s['votes']} votes ({s['format']}) to {s['path']}")
    return 0


def cmd_raters(args: argparse.Namespace) -> int:
    from cai.arena.raters import rater_report

    report = rater_report(store.connect(args.db), args.campaign)

    def text(r: dict[str, Any]) -> str:
        a = r["agreement"]
        rows = [{**x, "flags": "; ".join(x["flags"]) or "-"} for x in r["raters"]]
        cols = ["rater", "votes", "shared", "agree_majority", "gold", "gold_accuracy", "share_A", "median_seconds",
                "excluded", "flags"]
        return (table(rows, cols) + f"\nKrippendorff's alpha {a['alpha']} over {a['items']} items judged by more "
                f"than one rater ({a['votes']} votes)")

    emit(args, report, text)
    return 0


def cmd_exclude(args: argparse.Namespace) -> int:
    from cai.arena.raters import exclude_rater

    exclude_rater(store.connect(args.db), args.rater, args.campaign, args.reason, by="cli")
    print(f"{args.rater}'s votes{' in ' + repr(args.campaign) if args.campaign else ''} are left out of ratings")
    return 0


def cmd_include(args: argparse.Namespace) -> int:
    from cai.arena.raters import include_rater

    n = include_rater(store.connect(args.db), args.rater, args.campaign)
    print(f"{args.rater}'s votes count again ({n} exclusion(s) removed)")
    return 0


def cmd_gold(args: argparse.Namespace) -> int:
    import io

    import pandas as pd

    from cai.arena.raters import add_gold_pairs
    from cai.files import DataError, parse_json, read_text

    path = Path(args.file)
    text = read_text(path)  # the CLI's one reader: UTF-8, size limit, FILE:LINE errors
    if path.suffix.lower() == ".csv":
        try:
            pairs = pd.read_csv(io.StringIO(text)).to_dict(orient="records")
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DataError(f"{path}: bad CSV ({str(exc).strip()})") from None
    else:
        pairs = [parse_json(path, line, lineno) for lineno, line in enumerate(text.splitlines(), 1) if line.strip()]
        for lineno, pair in enumerate(pairs, 1):
            if not isinstance(pair, dict):
                raise DataError(f"{path}: gold pair {lineno}: expected a JSON object (prompt, better, worse)")
    n = add_gold_pairs(store.connect(args.db), args.campaign, pairs, rate=args.rate)
    print(f"added {n} gold pairs to {args.campaign!r}")
    return 0


def cmd_prefs(args: argparse.Namespace) -> int:
    from cai.discover import arena_prefs

    out = arena_prefs(store.connect(args.db), args.name, args.campaign, args.dimension, args.include_leaks)
    emit(args, out, lambda s: f"preference set {s['name']!r}: {s['pairs']} pairs from {s['votes']} votes "
                              f"({s['ties_left_out']} ties left out)")
    return 0
