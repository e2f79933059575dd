"""The workbench schema, created and evolved only through `sqlite_utils.Migrations`.

Each migration is append-only: never edit one that has shipped, add a new one below it.
Rows are plain dicts; JSON columns hold dicts/lists (sqlite-utils encodes them).
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("cai-workbench")


@migrations()
def m001_initial(db: Database) -> None:
    # Constitutions: a name, then immutable versions; principles and exemplars belong to a version.
    db["constitutions"].create(
        {"id": int, "name": str, "description": str, "created_at": str, "updated_at": str},
        pk="id",
        not_null={"name"},
    )
    db["constitutions"].create_index(["name"], unique=True)
    db["constitution_versions"].create(
        {
            "id": int,
            "constitution_id": int,
            "version": int,
            "note": str,
            "parent_id": int,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("constitution_id", "constitutions", "id")],
    )
    db["constitution_versions"].create_index(["constitution_id", "version"], unique=True)
    db["principles"].create(
        {
            "id": int,
            "version_id": int,
            "position": int,
            "kind": str,  # "critique" (critique/revision pair) | "comparison"
            "name": str,
            "critique": str,  # critique request (kind=critique)
            "revision": str,  # revision request (kind=critique)
            "text": str,  # comparison instruction (kind=comparison)
            "enabled": int,
        },
        pk="id",
        foreign_keys=[("version_id", "constitution_versions", "id")],
    )
    db["principles"].create_index(["version_id", "kind", "position"])
    db["exemplars"].create(
        {
            "id": int,
            "version_id": int,
            "position": int,
            "kind": str,  # "critique" | "comparison" | "comparison_cot"
            "data": str,  # JSON: the exemplar exactly as its source gave it
        },
        pk="id",
        foreign_keys=[("version_id", "constitution_versions", "id")],
    )
    db["exemplars"].create_index(["version_id", "kind", "position"])

    # Prompts: stored as HH transcripts ending in "\n\nAssistant:".
    db["prompt_sets"].create(
        {"id": int, "name": str, "kind": str, "source": str, "created_at": str},
        pk="id",
        not_null={"name"},
    )
    db["prompt_sets"].create_index(["name"], unique=True)
    db["prompts"].create(
        {"id": int, "set_id": int, "position": int, "text": str, "meta": str},
        pk="id",
        foreign_keys=[("set_id", "prompt_sets", "id")],
    )
    db["prompts"].create_index(["set_id", "position"], unique=True)

    # Preference pairs in TRL's columns; p = probability that `chosen` is the better one.
    db["pref_sets"].create(
        {
            "id": int,
            "name": str,
            "source": str,  # "human" | "ai" | "arena"
            "kind": str,  # "harmless" | "helpful" | ...
            "provenance": str,  # JSON
            "run_id": int,
            "created_at": str,
        },
        pk="id",
        not_null={"name"},
    )
    db["pref_sets"].create_index(["name"], unique=True)
    db["pairs"].create(
        {
            "id": int,
            "set_id": int,
            "position": int,
            "prompt": str,
            "chosen": str,
            "rejected": str,
            "p": float,
            "meta": str,  # JSON provenance: principle, raw log-probs, CoT, ...
        },
        pk="id",
        foreign_keys=[("set_id", "pref_sets", "id")],
    )
    db["pairs"].create_index(["set_id", "position"], unique=True)

    # Models and their lineage.
    db["models"].create(
        {
            "id": int,
            "name": str,
            "path": str,  # local path or Hugging Face id or a builtin spec ("default", "tiny")
            "backend": str,  # "hf" | "vllm"
            "chat": int,  # 1: use the tokenizer's chat template; 0: raw HH transcript
            "parent_id": int,
            "run_id": int,
            "constitution_version_id": int,
            "meta": str,
            "created_at": str,
        },
        pk="id",
        not_null={"name", "path"},
    )
    db["models"].create_index(["name"], unique=True)

    # Runs: one row per pipeline run; the worker writes progress and logs here.
    db["runs"].create(
        {
            "id": int,
            "kind": str,
            "status": str,  # queued | running | done | failed | cancelled
            "config": str,  # JSON
            "constitution_version_id": int,
            "model_id": int,
            "seed": int,
            "done": int,
            "total": int,
            "tokens_per_s": float,
            "eta_s": float,
            "cancel_requested": int,
            "pid": int,
            "error": str,
            "result": str,  # JSON summary written at the end
            "created_at": str,
            "started_at": str,
            "finished_at": str,
        },
        pk="id",
    )
    db["runs"].create_index(["status"])
    db["run_logs"].create(
        {"id": int, "run_id": int, "ts": str, "level": str, "line": str},
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["run_logs"].create_index(["run_id", "id"])

    # SL chains: one per (run, prompt, sample); steps in order.
    db["chains"].create(
        {
            "id": int,
            "run_id": int,
            "prompt_id": int,
            "sample": int,
            "model_id": int,
            "constitution_version_id": int,
            "mode": str,  # "critique" | "direct" | "helpful"
            "prompt": str,
            "final": str,
            "n_revisions": int,
            "flags": str,  # JSON list
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["chains"].create_index(["run_id", "prompt_id", "sample"], unique=True)
    db["chain_steps"].create(
        {
            "id": int,
            "chain_id": int,
            "idx": int,
            "kind": str,  # initial | critique | revision
            "round": int,
            "principle": str,
            "sent": str,  # the exact text sent to the model
            "output": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "seconds": float,
            "flags": str,  # JSON list: empty | repeated | truncated
            "pm_score": float,
        },
        pk="id",
        foreign_keys=[("chain_id", "chains", "id")],
    )
    db["chain_steps"].create_index(["chain_id", "idx"], unique=True)

    # People and the arena.
    db["users"].create(
        {"id": int, "name": str, "role": str, "password_hash": str, "created_at": str},
        pk="id",
        not_null={"name", "role"},
    )
    db["users"].create_index(["name"], unique=True)
    db["battles"].create(
        {
            "id": int,
            "campaign_id": int,
            "user_id": int,
            "model_a": int,
            "model_b": int,
            "dimension": str,  # helpfulness | harmlessness
            "status": str,  # open | ended
            "created_at": str,
            "ended_at": str,
        },
        pk="id",
    )
    db["votes"].create(
        {
            "id": int,
            "battle_id": int,
            "turn": int,
            "user_id": int,
            "winner": str,  # model_a | model_b | tie | tie (bothbad)
            "comment": str,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("battle_id", "battles", "id")],
    )
    db["votes"].create_index(["battle_id", "turn"], unique=True)


@migrations()
def m003_rl_stage(db: Database) -> None:
    # RL stage (owner: RL-stage engineer). Response pairs sampled by a policy: one row per (run, prompt).
    db["response_pairs"].create(
        {
            "id": int,
            "run_id": int,
            "prompt_id": int,
            "prompt": str,
            "response_a": str,
            "response_b": str,
            "model_id": int,
            "meta": str,  # JSON: finish reasons, token counts, temperature, seed
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["response_pairs"].create_index(["run_id", "prompt_id"], unique=True)
    # AI feedback labels of a label run: p = probability that response_a is the better one.
    db["feedback_labels"].create(
        {
            "id": int,
            "run_id": int,
            "pair_id": int,  # response_pairs.id
            "p": float,
            "principles": str,  # JSON list of principle names
            "meta": str,  # JSON: every reading (principle, order, sample, raw log-probs, CoT text, p)
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["feedback_labels"].create_index(["run_id", "pair_id"], unique=True)
    # HHH eval: one row per (run, comparison).
    db["hhh_results"].create(
        {
            "id": int,
            "run_id": int,
            "idx": int,  # line index in the eval file (0-based)
            "correct_option": str,  # "A" | "B" as the file gives it
            "p_plain": float,  # p(correct) in the file's order
            "p_swapped": float,  # p(correct) with the options swapped
            "p_avg": float,  # order-averaged p(correct)
            "meta": str,  # JSON: raw log-probs, CoT texts
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["hhh_results"].create_index(["run_id", "idx"], unique=True)
    # Agreement of AI soft labels with human choices: one row per (run, human pair).
    db["agreement_pairs"].create(
        {
            "id": int,
            "run_id": int,
            "pair_id": int,  # pairs.id (human preference pair)
            "principle": str,
            "p_chosen": float,  # AI probability that the human-chosen response is better
            "p_first": float,  # p(chosen) with chosen shown as (A) only
            "p_second": float,  # p(chosen) with chosen shown as (B) only (null without both orders)
            "meta": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["agreement_pairs"].create_index(["run_id", "pair_id"], unique=True)
    # Goodhart watch: policy samples and their statistics at each RL log step.
    db["goodhart"].create(
        {
            "id": int,
            "run_id": int,
            "step": int,
            "metrics": str,  # JSON: distinct_n, top n-grams, mean length, evasive rate, mean reward
            "samples": str,  # JSON list of {prompt, completion, reward}
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["goodhart"].create_index(["run_id", "step"], unique=True)


@migrations()
def m004_principle_alternatives(db: Database) -> None:
    # A paper critique principle may list several critique requests for one revision request
    # ("prompt": [...] in CritiqueRevisionInstructions.json): `critique` holds the first, this the rest.
    db["principles"].add_column("alternatives", str)  # JSON list of further critique requests


@migrations()
def m006_arena(db: Database) -> None:
    # Arena campaigns: which models battle, on which dimension, from which prompts, under which policy.
    db["campaigns"].create(
        {
            "id": int,
            "name": str,
            "dimension": str,  # helpfulness | harmlessness
            "model_ids": str,  # JSON list of models.id
            "prompt_set": str,  # NULL: free chat; else a prompt_sets.name whose prompts seed battles
            "vote_cap": int,  # votes per rater in this campaign; 0 = no cap
            "pairing": str,  # uniform | uncertain
            "instructions": str,
            "max_turns": int,
            "max_new_tokens": int,
            "temperature": float,
            "status": str,  # active | closed
            "created_by": str,
            "created_at": str,
        },
        pk="id",
        not_null={"name", "dimension"},
    )
    db["campaigns"].create_index(["name"], unique=True)
    # Battles gain the seeded prompt and the seed that drew placement and continuation.
    db["battles"].add_column("prompt_id", int)
    db["battles"].add_column("seed", int)
    db["battles"].create_index(["campaign_id", "user_id"])
    # One row per turn: the exact transcript both models saw, both answers, and what the rater was shown.
    db["battle_turns"].create(
        {
            "id": int,
            "battle_id": int,
            "turn": int,
            "prompt": str,  # HH transcript ending "\n\nAssistant:", identical for both sides
            "response_a": str,  # shown in position A (battles.model_a)
            "response_b": str,  # shown in position B (battles.model_b)
            "seconds_a": float,
            "seconds_b": float,
            "error": str,  # server-side only: why a side failed
            "shown_at": str,  # set once both complete answers reached the rater; votes need it
            "continued_with": str,  # "a" | "b": the response the conversation continued from
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("battle_id", "battles", "id")],
    )
    db["battle_turns"].create_index(["battle_id", "turn"], unique=True)
    # Single-use invite codes (only their SHA-256 is stored) that let a person create a rater account.
    db["invites"].create(
        {
            "id": int,
            "code_hash": str,
            "campaign_id": int,
            "role": str,
            "note": str,
            "created_by": str,
            "created_at": str,
            "used_by": int,
            "used_at": str,
        },
        pk="id",
        not_null={"code_hash"},
    )
    db["invites"].create_index(["code_hash"], unique=True)
    # Responses that name a model or its maker: the vote on that turn can be left out of ratings.
    db["leak_flags"].create(
        {"id": int, "battle_id": int, "turn": int, "side": str, "model_id": int, "terms": str, "created_at": str},
        pk="id",
        foreign_keys=[("battle_id", "battles", "id")],
    )
    db["leak_flags"].create_index(["battle_id", "turn", "side"], unique=True)


@migrations()
def m007_chain_browsing(db: Database) -> None:
    # The web app pages 100,000s of chains server-side (owner: web-app engineer): filter columns are
    # indexed so "where x = ? order by id desc limit ? offset ?" walks an index, and a full-text index
    # over prompt and final text (kept in sync by triggers) serves the text search.
    db["chains"].create_index(["run_id"], index_name="idx_chains_run", if_not_exists=True)
    db["chains"].create_index(["model_id"], index_name="idx_chains_model", if_not_exists=True)
    db["chains"].create_index(
        ["constitution_version_id"], index_name="idx_chains_constitution_version", if_not_exists=True
    )
    db["chain_steps"].create_index(["principle", "chain_id"], index_name="idx_chain_steps_principle", if_not_exists=True)
    db["chains"].enable_fts(["prompt", "final"], create_triggers=True)


@migrations()
def m009_chain_step_pm_run(db: Database) -> None:
    # Which revision-scores run wrote chain_steps.pm_score (owner: SL engineer): a new scoring run with
    # another preference model rescores every step, a resumed one skips the steps it already scored.
    db["chain_steps"].add_column("pm_run_id", int)


@migrations()
def m011_run_heartbeat(db: Database) -> None:
    # Worker liveness (owner: inputs engineer): the worker refreshes heartbeat_at every few seconds and
    # records its host; a listing shows a running run whose heartbeat is stale, or whose pid is gone on
    # this host, as interrupted with the time it was last seen.
    db["runs"].add_column("host", str)
    db["runs"].add_column("heartbeat_at", str)


@migrations()
def m012_judge_consistency(db: Database) -> None:
    # Whether a pair's two option orders gave the same verdict (1/0; null with one order), see
    # cai.evals.consistency (owner: rigor).
    for table in ("feedback_labels", "hhh_results", "agreement_pairs"):
        db.table(table).add_column("consistent", int)


@migrations()
def m012_rater_quality(db: Database) -> None:
    # Rater quality (owner: rigor): an admin can leave a rater's votes out of ratings (campaign_id NULL:
    # every campaign); gold pairs have a known-better answer and are served as one-turn battles
    # (battles.gold_id, gold_better = the side showing the better answer), at a campaign's gold_rate.
    db.table("rater_exclusions").create(
        {"id": int, "user_id": int, "campaign_id": int, "reason": str, "created_by": str, "created_at": str},
        pk="id",
        foreign_keys=[("user_id", "users", "id")],
    )
    db.table("gold_pairs").create(
        {"id": int, "campaign_id": int, "prompt": str, "better": str, "worse": str, "created_at": str},
        pk="id",
        foreign_keys=[("campaign_id", "campaigns", "id")],
    )
    db.table("battles").add_column("gold_id", int)
    db.table("battles").add_column("gold_better", str)
    db.table("campaigns").add_column("gold_rate", float)


@migrations()
def m013_run_steps(db: Database) -> None:
    # Step-level progress of a run (owner: newcomer-UX engineer): an SL run of 2 chains × 4 rounds is 18
    # model steps; the dashboard shows which step runs now and an ETA from the first one, not "0/2" for minutes.
    db.table("runs").add_column("steps_done", int)
    db.table("runs").add_column("steps_total", int)
    db.table("runs").add_column("phase", str)


@migrations()
def m010_sign_in_hardening(db: Database) -> None:
    # Sign-in hardening (owner: arena engineer). `session_epoch` goes up when a password changes, which
    # ends the sessions opened before; invites get an expiry; every sign-in attempt is logged, and the
    # failures in a recent window (per name and per client address) drive the lockout in `cai.users`.
    db.table("users").add_column("session_epoch", int, not_null_default=0)
    db.table("invites").add_column("expires_at", str)
    db.table("login_attempts").create(
        {"id": int, "name": str, "address": str, "ok": int, "reason": str, "at": str, "at_unix": float},
        pk="id",
    )
    db.table("login_attempts").create_index(["name", "at_unix"], index_name="idx_login_attempts_name")
    db.table("login_attempts").create_index(["address", "at_unix"], index_name="idx_login_attempts_address")


@migrations()
def m014_experiments(db: Database) -> None:
    # Constitution experiments (owner: experiments engineer): one row per experiment, executed by an
    # orchestrating run of kind "experiment"; each arm (a constitution version) gets ordinary runs.
    db.table("experiments").create(
        {
            "id": int,
            "run_id": int,  # the orchestrating "experiment" run
            "config": str,  # JSON: versions, prompts, model, seed, stages and stage options
            "created_at": str,
        },
        pk="id",
    )
    db.table("experiment_runs").create(
        {
            "id": int,
            "experiment_id": int,
            "arm": int,  # 0 = the baseline version, 1.. = the versions compared with it
            "version": str,  # "NAME@N" as named
            "constitution_version_id": int,
            "stage": str,  # sl | scores | sft | label | agreement
            "run_id": int,
            "position": int,  # execution order
        },
        pk="id",
        foreign_keys=[("experiment_id", "experiments", "id"), ("run_id", "runs", "id")],
    )
    db.table("experiment_runs").create_index(["experiment_id", "arm", "stage"], unique=True)


@migrations()
def m015_sl_partial_steps(db: Database) -> None:
    # Steps of SL chains not finished yet (owner: runs engineer): each step (response, critique, revision) is
    # stored as it completes, so a cancel or crash loses at most the step in flight; the chain's rows move to
    # chains/chain_steps when it is whole, and a resume continues from the steps stored here.
    db["sl_partial_steps"].create(
        {
            "id": int,
            "run_id": int,
            "prompt_id": int,
            "sample": int,
            "idx": int,
            "kind": str,
            "round": int,
            "principle": str,
            "sent": str,
            "output": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "seconds": float,
            "flags": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["sl_partial_steps"].create_index(["run_id", "prompt_id", "sample", "idx"], unique=True)


@migrations()
def m016_pipelines(db: Database) -> None:
    # Pipelines (cai.pipeline): a run of kind "pipeline" executes ordinary stage runs, linked here in order.
    db.table("pipeline_runs").create(
        {
            "id": int,
            "pipeline_run_id": int,  # the orchestrating "pipeline" run
            "stage": str,  # the recipe's section: sl | sft | pairs | label | pm | scores | rl | dpo | hhh | agreement
            "run_id": int,  # the stage run (created by the pipeline, or an existing run it reuses)
            "position": int,  # execution order
            "reused": int,  # 1 = an existing run named by `reuse:`
        },
        pk="id",
        foreign_keys=[("pipeline_run_id", "runs", "id"), ("run_id", "runs", "id")],
    )
    db.table("pipeline_runs").create_index(["pipeline_run_id", "stage"], unique=True)


@migrations()
def m017_arena_message_cap(db: Database) -> None:
    # Longest rater message a campaign accepts, in characters (owner: security engineer, #25.5); older
    # campaigns get the default (cai.arena.MAX_MESSAGE_CHARS).
    db.table("campaigns").add_column("max_message_chars", int, not_null_default=4000)


@migrations()
def m018_database_folders(db: Database) -> None:
    # Run and model folders keyed by the database (owner: train-resume engineer, issue 25 item 12): two
    # databases in one folder shared `runs/<id>` and `models/<name>`. One key/value table: the database's
    # uuid and the last run id that keeps the old shared `runs/<id>` (cai.store.folders).
    from cai.store.folders import initial

    db.table("workbench").create({"key": str, "value": str}, pk="key")
    db.table("workbench").insert_all([{"key": k, "value": v} for k, v in initial(db).items()])


@migrations()
def m019_pipeline_sweeps(db: Database) -> None:
    # Sweeps (owner: sweep engineer, issue 23 §3): a stage that depends on a swept recipe key runs once per
    # value; `sweep` is the JSON of the values it ran at ({"sl.principles": 4}), "" for a stage run shared by
    # all values. A pipeline links one stage run per (stage, sweep).
    db.execute("drop index if exists idx_pipeline_runs_pipeline_run_id_stage")
    db.table("pipeline_runs").add_column("sweep", str, not_null_default="")
    db.table("pipeline_runs").create_index(["pipeline_run_id", "stage", "sweep"], unique=True)


@migrations()
def m020_temperature_samples(db: Database) -> None:
    # Stage "temperature" (owner: sweep engineer, issue 23 §3, Fig. 10): the final policy's answers to held-out
    # red-team prompts at each temperature, with the harmlessness PM's score of each answer.
    db.table("temperature_samples").create(
        {
            "id": int,
            "run_id": int,
            "prompt_id": int,
            "temperature": float,
            "sample": int,  # k-th answer at this temperature (0 at T = 0: greedy gives one answer)
            "prompt": str,
            "answer": str,
            "pm_score": float,  # the harmlessness PM's score (higher = less harmful)
            "seed": int,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db.table("temperature_samples").create_index(["run_id", "prompt_id", "temperature", "sample"], unique=True)


@migrations()
def m021_compare(db: Database) -> None:
    # The automatic tournament between models (stage "compare", issue 23 section 2; owner: compare engineer):
    # each model's answer per prompt, each pair's judgement per judge, and the ratings per dimension and judge.
    db.table("compare_answers").create(
        {
            "id": int,
            "run_id": int,
            "model": str,  # registry name
            "role": str,  # what the model is in the comparison: base, SL-CAI, RL-CAI, DPO (default: its name)
            "dimension": str,  # harmlessness (red-team prompts) | helpfulness (helpful prompts)
            "prompt_id": int,
            "prompt": str,  # the HH prompt as sent (single turn)
            "answer": str,
            "tokens": int,
            "finish": str,
            "seed": int,  # the sampling seed (the same for every model on a prompt)
            "pm_score": float,  # the PM judge's score of (prompt, answer); NULL without a PM judge
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db.table("compare_answers").create_index(["run_id", "model", "dimension", "prompt_id"], unique=True)
    db.table("compare_judgements").create(
        {
            "id": int,
            "run_id": int,
            "judge": str,  # pm | judge
            "judge_model": str,  # the PM or the feedback model
            "dimension": str,
            "prompt_id": int,
            "model_a": str,  # shown first in order AB
            "model_b": str,
            "p": float,  # P(model_a's answer better)
            "winner": str,  # model_a | model_b | tie (p within the tie band of 0.5)
            "orders": str,  # "AB,BA" (both orders, averaged), "AB", or "score" (PM: no order)
            "consistent": int,  # both orders pick the same answer (1/0); NULL for the PM or one order
            "principle": str,  # comparison principle name(s) the judge read
            "principle_sha256": str,  # of the exact principle text(s) sent
            "meta": str,  # JSON: readings (judge) or the two scores (pm)
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db.table("compare_judgements").create_index(
        ["run_id", "judge", "dimension", "prompt_id", "model_a", "model_b"], unique=True)
    db.table("compare_ratings").create(
        {
            "id": int,
            "run_id": int,
            "judge": str,
            "dimension": str,
            "model": str,
            "role": str,
            "method": str,  # bt (Bradley-Terry, with bootstrap interval)
            "rating": float,
            "ci_low": float,
            "ci_high": float,
            "n": int,  # judgements the model took part in
            "note": str,  # why there is no interval
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db.table("compare_ratings").create_index(["run_id", "judge", "dimension", "model", "method"], unique=True)
    # An arena campaign made from a compare run (`cai arena campaign create --from-compare ID`).
    db.table("campaigns").add_column("compare_run_id", int)


@migrations()
def m022_served_engines(db: Database) -> None:
    # Engines that stay up (owner: serve engineer, issue 27 item 1): a model marked `serve` gets one vLLM
    # server that every caller shares (cai.engines). `engines` is the rendezvous between processes: one row
    # per model folder, with the server's URL, pid and the process that owns (started) it.
    db.table("models").add_column("serve", int, not_null_default=0)
    db.table("engines").create(
        {
            "folder": str,  # the model folder the server loaded (two names for one folder share it)
            "model": str,  # the name it was first asked for by
            "url": str,  # http://host:port/v1
            "pid": int,  # the vLLM server's process (group leader)
            "owner_pid": int,  # the process that started it and stops it on exit
            "status": str,  # starting | ready | failed | stopped
            "error": str,  # why it failed to start (one line), for the fallback message
            "log": str,  # the server's log file
            "starts": int,  # times started (1 + restarts after it died)
            "ready_s": float,  # seconds the last start took to answer /health
            "updated_at": str,
        },
        pk="folder",
    )


@migrations()
def m023_engine_dtype(db: Database) -> None:
    # The dtype a shared engine serves in, so the runs that score through it store it with their rows
    # (a served label or HHH run said "scored in None").
    db.table("engines").add_column("dtype", str)
