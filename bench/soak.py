"""Soak and crash campaigns: many raters voting at once, run workers killed with SIGKILL and resumed, and
the web app killed while a run goes on. Prints JSON; every figure is a count checked against the database.

Votes: N raters on the rater page (scripted models, over HTTP) each cast V votes in battles of T turns;
acknowledged votes must equal stored votes, each stored once, on the turn it was cast for.
Crashes: real `python -m cai.runs ID` workers on the tiny model are killed at random points (items stored,
then a random delay) across an SL run and a label run, each followed by `cai.runs.resume`; the seed of the
points is printed, and `--seed` replays them. App: `python app.py` launches an SL run, is killed (its whole
process group, SIGKILL), and the run must finish on its own, complete.
Usage: python bench/soak.py [--raters 50] [--votes 20] [--turns 5] [--kills 10] [--seed S] [--skip-app]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import rater_page  # noqa: E402

# ----------------------------------------------------------------------------- votes


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-quantile (q in (0, 1]) of `values`."""
    ordered = sorted(values)
    return ordered[max(0, int(round(q * len(ordered))) - 1)]


def vote_soak(db_path: str | Path, raters: int, votes: int, turns: int) -> dict[str, Any]:
    """`raters` rater sessions at once, `votes` votes each (a new battle every `turns` votes), each vote
    with a unique comment; then every acknowledged vote is looked up in the database."""
    from cai import store

    acked: list[str] = []
    refused: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    with rater_page.serve(db_path, {"m-one": " One short answer.", "m-two": " Another short answer."}, "soak",
                          max_turns=turns, raters=raters) as url:
        clients: list[Any] = [None] * raters

        def sign_in(i: int) -> None:
            try:
                clients[i] = rater_page.rater(url, f"r{i}", "soak")
            except Exception as exc:
                raise RuntimeError(f"r{i}, at sign-in: {exc!r}") from exc

        setup_errors = rater_page.run_threads(raters, sign_in)
        barrier = threading.Barrier(raters - len(setup_errors)) if raters > len(setup_errors) else None

        def cast(i: int) -> None:
            client = clients[i]
            if client is None:
                return
            assert barrier is not None
            barrier.wait()
            for k in range(votes):
                step = "start"
                try:
                    if k and k % turns == 0:  # the last vote of a battle ended it: start the next one
                        client.predict("soak", api_name="/start")
                    step = "send"
                    client.predict(f"question {k} from r{i}", api_name="/send")
                    step = "vote"
                    comment = f"r{i}-v{k}"
                    start = time.perf_counter()
                    status = client.predict(["A is better", "B is better", "Tie", "Both are bad"][(i + k) % 4],
                                            comment, api_name="/vote")[0]
                    seconds = time.perf_counter() - start
                except Exception as exc:  # this rater stops here; the caller counts and reports it
                    raise RuntimeError(f"r{i}, vote {k}, at /{step}: {exc!r}") from exc
                with lock:
                    latencies.append(seconds)
                    (acked if status.startswith("Vote recorded") else refused).append(comment)

        wall = time.perf_counter()
        vote_errors = rater_page.run_threads(raters, cast)
        wall = time.perf_counter() - wall
    db = store.connect(db_path)
    try:
        rows = list(db.query(
            "select v.comment, v.turn, u.name as voter, o.name as owner from votes v "
            "join battles b on b.id = v.battle_id join users u on u.id = v.user_id join users o on o.id = b.user_id"))
    finally:
        db.close()
    stored = collections.Counter(r["comment"] for r in rows)
    # A vote is in place when its rater owns the battle and it sits on the turn it was cast for.
    misplaced = [r["comment"] for r in rows
                 if not (r["voter"] == r["owner"] == r["comment"].split("-")[0]
                         and r["turn"] == int(r["comment"].split("-v")[1]) % turns + 1)]
    ms = [1000 * s for s in latencies]
    errors = [*setup_errors, *vote_errors]
    return {
        "raters": raters,
        "votes_per_rater": votes,
        "turns_per_battle": turns,
        "expected": raters * votes,
        "acknowledged": len(acked),
        "stored": len(rows),
        "stored_once": sum(1 for c in acked if stored[c] == 1),
        "lost": sum(1 for c in acked if stored[c] == 0),
        "duplicated": sum(n - 1 for n in stored.values() if n > 1),
        "stored_unacknowledged": sum(1 for c in stored if c not in set(acked)),
        "misplaced": len(misplaced),
        "refused": len(refused),
        "errors": len(errors),
        "first_error": str(errors[0])[:300] if errors else None,
        "vote_p50_ms": round(statistics.median(ms), 1) if ms else None,
        "vote_p95_ms": round(percentile(ms, 0.95), 1) if ms else None,
        "wall_s": round(wall, 2),
    }


# ----------------------------------------------------------------------------- crashes


def seed_inputs(db: Any, prompts: int) -> None:
    from tests.helpers import seed

    seed(db, prompts, constitution="soak")


def kill_points(seed: int, kills: int, items: int, max_delay: float = 0.5) -> list[tuple[int, float]]:
    """`kills` points (items stored before the kill, then a delay in s), in the order a run reaches them.

    Targets lie in the first half of the run, so the run is still going when the point comes.
    """
    rng = random.Random(seed)
    targets = sorted(rng.randrange(0, max(1, items // 2)) for _ in range(kills))
    return [(t, round(rng.uniform(0.0, max_delay), 3)) for t in targets]


def sl_check(db: Any, run_id: int, revisions: int) -> dict[str, int]:
    """Chains of an SL run against its plan: lost, duplicated, and chains without all their steps."""
    from cai import sl
    from cai.runs import get_run
    from cai.stages import SLConfig

    plan = {(it.prompt_id, it.sample) for it in sl.plan(db, SLConfig.from_dict(get_run(db, run_id)["config"]))}
    rows = db.execute("select prompt_id, sample from chains where run_id = ?", [run_id]).fetchall()
    stored = collections.Counter((int(p), int(s)) for p, s in rows)
    # Every chain must hold its steps in order, idx 0..n-1: initial, then (critique, revision) per round.
    want = [(i, kind) for i, kind in enumerate(["initial"] + ["critique", "revision"] * revisions)]
    steps: dict[int, list[tuple[int, str]]] = {int(c[0]): [] for c in
                                               db.execute("select id from chains where run_id = ?", [run_id])}
    for chain_id, idx, kind in db.execute(
        "select s.chain_id, s.idx, s.kind from chain_steps s join chains c on c.id = s.chain_id "
        "where c.run_id = ? order by s.chain_id, s.idx", [run_id]):
        steps[int(chain_id)].append((int(idx), kind))
    return {
        "planned": len(plan),
        "stored": len(rows),
        "lost": len(plan - set(stored)),
        "duplicated": sum(n - 1 for n in stored.values() if n > 1),
        "incomplete_chains": sum(1 for got in steps.values() if got != want),
    }


def label_check(db: Any, run_id: int, pairs_run: int) -> dict[str, int]:
    """Labels of a label run against the pairs it labels: lost, duplicated, and its preference set's rows."""
    pairs = {int(r[0]) for r in db.execute("select id from response_pairs where run_id = ?", [pairs_run])}
    rows = [int(r[0]) for r in db.execute("select pair_id from feedback_labels where run_id = ?", [run_id])]
    stored = collections.Counter(rows)
    sets = db.execute("select id from pref_sets where run_id = ?", [run_id]).fetchall()
    set_rows = [db.execute("select count(*), count(distinct position) from pairs where set_id = ?", [s[0]]).fetchone()
                for s in sets]
    return {
        "planned": len(pairs),
        "stored": len(rows),
        "lost": len(pairs - set(stored)),
        "duplicated": sum(n - 1 for n in stored.values() if n > 1),
        "pref_sets": len(sets),
        # A set, once written, holds one row per pair (it is written in one transaction, or not at all).
        "pref_set_bad_rows": sum(1 for n, distinct in set_rows if not n == distinct == len(pairs)),
    }


def _stored(db: Any, kind: str, run_id: int) -> int:
    table = "chains" if kind == "sl" else "feedback_labels"
    return int(db.execute(f"select count(*) from {table} where run_id = ?", [run_id]).fetchone()[0])


def crash_run(db_path: str | Path, kind: str, run_id: int, points: list[tuple[int, float]],
              check: Any, timeout: float = 900.0) -> dict[str, Any]:
    """Start the run's worker, kill it (SIGKILL) at each point and resume it, then let it finish.

    After each kill the run must show as interrupted (its pid is gone) and the stored items must pass
    `check(db)` with nothing lost so far beyond the unfinished, nothing duplicated, no chain half-written.
    """
    from cai import runs, store

    db = store.connect(db_path)
    killed: list[dict[str, Any]] = []
    try:
        proc = runs.launch(db_path, run_id)
        for target, delay in points:
            deadline = time.monotonic() + timeout
            while proc.poll() is None and _stored(db, kind, run_id) < target and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(delay)
            if proc.poll() is not None:
                killed.append({"target": target, "delay": delay, "landed": False})
                break  # the run ended before this point: nothing left to interrupt
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            row = runs.get_run(db, run_id)
            figures = check(db)
            killed.append({"target": target, "delay": delay, "landed": True, "stored_at_kill": figures["stored"],
                           "status_after_kill": row["status"], "duplicated": figures["duplicated"],
                           "incomplete": figures.get("incomplete_chains", figures.get("pref_set_bad_rows", 0))})
            proc = runs.resume(db, db_path, run_id)  # refuses unless the row shows the run as stopped
        final = runs.wait(db, run_id, timeout=timeout, poll=0.1)
        proc.wait()
        figures = check(db)
    finally:
        db.close()
    return {"run_id": run_id, "status": final["status"], "error": final["error"], "kills": killed,
            "kills_landed": sum(k["landed"] for k in killed), "interrupted_after_kill":
            sum(k.get("status_after_kill") == "interrupted" for k in killed), **figures,
            "duplicated_mid_run": sum(k.get("duplicated", 0) for k in killed),
            "incomplete_mid_run": sum(k.get("incomplete", 0) for k in killed)}


def crash_campaign(db_path: str | Path, seed: int, sl_kills: int, label_kills: int, prompts: int,
                   revisions: int = 1, max_delay: float = 0.5) -> dict[str, Any]:
    """An SL run and a label run (tiny model), each killed and resumed at the points drawn from `seed`."""
    from cai import runs, store
    from cai.stages import LabelConfig, PairsConfig, SLConfig

    db = store.connect(db_path)
    seed_inputs(db, prompts)
    sl_id = runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="soak", revisions=revisions,
                                         batch_size=2, max_new_tokens=8, few_shot=1, seed=seed))
    pairs = runs.execute(db, runs.create_run(db, PairsConfig(prompts="red", model="tiny", batch_size=8,
                                                             max_new_tokens=8, seed=seed)))
    assert pairs["status"] == "done", pairs["error"]
    label_id = runs.create_run(db, LabelConfig(pairs=pairs["id"], feedback_model="tiny", constitution="soak",
                                               batch_size=1, name="soak-labels", seed=seed))
    db.close()
    sl_points = kill_points(seed, sl_kills, prompts, max_delay)
    label_points = kill_points(seed + 1, label_kills, prompts, max_delay)
    sl = crash_run(db_path, "sl", sl_id, sl_points, lambda d: sl_check(d, sl_id, revisions))
    label = crash_run(db_path, "label", label_id, label_points, lambda d: label_check(d, label_id, pairs["id"]))
    total = [sl, label]
    return {
        "seed": seed,
        "replay": f"python bench/soak.py --seed {seed}",
        "kills_planned": sl_kills + label_kills,
        "kills_landed": sum(r["kills_landed"] for r in total),
        "interrupted_after_kill": sum(r["interrupted_after_kill"] for r in total),
        "items": sum(r["planned"] for r in total),
        "lost": sum(r["lost"] for r in total),
        "duplicated": sum(r["duplicated"] + r["duplicated_mid_run"] for r in total),
        "incomplete_chains": sl["incomplete_chains"] + sl["incomplete_mid_run"],
        "sl": sl,
        "label": label,
    }


# ----------------------------------------------------------------------------- the web app killed


def app_kill(db_path: str | Path, prompts: int, timeout: float = 900.0) -> dict[str, Any]:
    """`python app.py` launches an SL run from the dashboard; the app's whole process group is killed with
    SIGKILL once the run has stored a chain; the worker must go on and finish the run, complete."""
    from gradio_client import Client

    from cai import runs, store
    from ui.dashboard import form_fields

    db = store.connect(db_path)
    seed_inputs(db, prompts)
    db.close()
    password = secrets.token_urlsafe(12)
    port = rater_page.free_port()
    log = Path(db_path).parent / "app.log"
    env = {**os.environ, "CAI_ADMIN_PASSWORD": password, "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        app = subprocess.Popen([sys.executable, "app.py", "--db", str(db_path), "--port", str(port), "--model", "tiny"],
                               cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    db = store.connect(db_path)
    try:
        _wait_for_port(port, app, log, timeout)
        client = Client(f"http://127.0.0.1:{port}/", auth=("admin", password), verbose=False)
        values = {f["name"]: f["default"] for f in form_fields("sl")}
        values.update(prompts="red", model="tiny", constitution="soak", revisions=1, batch_size=2, max_new_tokens=8,
                      few_shot=1, constitution_version=None, limit=None)
        args = [("" if v is None else v) for v in values.values()]
        api_name, n_params = launcher(client, "sl")
        result = client.predict(*args, *([{}] * (n_params - len(args))), api_name=api_name)
        status, run_id = result[0], result[1]
        assert status.startswith("Started"), status
        run_id = int(run_id)
        deadline = time.monotonic() + timeout
        while db["chains"].count_where("run_id = ?", [run_id]) < 1:
            assert time.monotonic() < deadline, "the run stored no chain in time"
            time.sleep(0.05)
        worker = runs.get_run(db, run_id)["pid"]
        os.killpg(app.pid, signal.SIGKILL)  # the app and everything in its process group
        app.wait()
        stored_at_kill = db["chains"].count_where("run_id = ?", [run_id])
        alive_after_kill = runs.get_run(db, run_id)["status"]
        final = runs.wait(db, run_id, timeout=timeout, poll=0.2)
        figures = sl_check(db, run_id, 1)
    finally:
        if app.poll() is None:
            os.killpg(app.pid, signal.SIGKILL)
            app.wait()
        db.close()
    return {"run_id": run_id, "worker_pid": worker, "app_pid": app.pid, "stored_at_kill": stored_at_kill,
            "status_after_kill": alive_after_kill, "status": final["status"], "error": final["error"], **figures}


def launcher(client: Any, kind: str) -> tuple[str, int]:
    """The dashboard's launch endpoint for a stage form (named `launch_<kind>` in ui/dashboard.py) and how
    many inputs it takes: the form's fields, then the browser's saved form where the API lists it."""
    name = f"/launch_{kind.replace('-', '_')}"
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert name in api, f"the app has no {name} endpoint; it has {sorted(api)}"
    return name, len(api[name]["parameters"])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    from ui.warmup import probe  # the port listens before the app is built: wait for the app

    deadline = time.monotonic() + timeout
    while True:
        try:
            probe("127.0.0.1", port)  # listening and built (not the loading page)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raters", type=int, default=50)
    parser.add_argument("--votes", type=int, default=20, help="Votes per rater.")
    parser.add_argument("--turns", type=int, default=5, help="Turns per battle (a new battle after each).")
    parser.add_argument("--kills", type=int, default=10, help="Kill points, split between the SL and label runs.")
    parser.add_argument("--prompts", type=int, default=24, help="Prompts (chains, and pairs to label).")
    parser.add_argument("--seed", type=int, default=None, help="Seed of the kill points (default: random, printed).")
    parser.add_argument("--skip-votes", action="store_true")
    parser.add_argument("--skip-crashes", action="store_true")
    parser.add_argument("--skip-app", action="store_true")
    args = parser.parse_args()
    seed = secrets.randbelow(2**31) if args.seed is None else args.seed
    print(f"kill-point seed {seed} (replay: python bench/soak.py --seed {seed})", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"seed": seed}
    # Gradio prints "Closing server ..." on stdout: keep stdout for the JSON alone.
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        if not args.skip_crashes:
            out["crashes"] = crash_campaign(Path(tmp) / "crash.db", seed, args.kills - args.kills // 2,
                                            args.kills // 2, args.prompts)
        if not args.skip_app:
            (Path(tmp) / "app").mkdir()
            out["app_kill"] = app_kill(Path(tmp) / "app" / "workbench.db", args.prompts)
        if not args.skip_votes:
            out["votes"] = vote_soak(Path(tmp) / "votes.db", args.raters, args.votes, args.turns)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
