"""Arena campaigns made from a compare run, so humans check the automatic ratings on the same battles.

One campaign per dimension the compare run judged (harmlessness on its red-team prompts, helpfulness on its
helpful prompts), between the same models, seeded with exactly the prompts it compared (a prompt set of that
name made from its stored answers' prompts, in order), with its answer length and temperature and one turn
(the comparison is single turn). The campaign row keeps `compare_run_id`, which is how the pipeline report
finds the human votes to put beside the automatic ratings.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from cai import data
from cai.arena.campaigns import ArenaError, check_test_models, create_campaign
from cai.run_context import RunError, get_run

KINDS = {"harmlessness": "red-team", "helpfulness": "helpful"}  # dimension -> prompt set kind


def from_compare(db: Database, run_id: int, *, name: str | None = None, allow_test_models: bool = False,
                 vote_cap: int = 0, pairing: str = "uniform", created_by: str | None = None) -> list[dict[str, Any]]:
    """The new campaigns (one per dimension), all made in one transaction, or an ArenaError naming why not."""
    try:
        run = get_run(db, run_id)
    except RunError:
        raise ArenaError(f"no run with id {run_id}") from None
    if run["kind"] != "compare":
        raise ArenaError(f"run {run_id} is a {run['kind']} run, not a compare run")
    if run["status"] != "done":
        raise ArenaError(f"compare run {run_id} is {run['status']}: make a campaign from a finished one")
    models, cfg = run["result"]["models"], run["config"]
    check_test_models(models, allow_test_models)
    prefix = (name or f"compare-{run_id}").strip()
    dims = [d for d in KINDS if d in run["result"]["prompt_sets"]]
    for dim in dims:
        cname = f"{prefix}-{dim}"
        if db.table("campaigns").count_where("name = ?", [cname]):
            raise ArenaError(f"a campaign named {cname!r} already exists (choose another NAME)")
        if db.table("prompt_sets").count_where("name = ?", [cname]):
            raise ArenaError(f"a prompt set named {cname!r} already exists (choose another NAME)")
    made = []
    with db.atomic():
        for dim in dims:
            cname = f"{prefix}-{dim}"
            prompts = [r[0] for r in db.execute(
                "select a.prompt from compare_answers a where a.run_id = ? and a.dimension = ? and a.model = ? "
                "order by a.prompt_id", [run_id, dim, models[0]]).fetchall()]
            data.create_prompt_set(db, cname, KINDS[dim], prompts, source=f"compare run {run_id}")
            camp = create_campaign(db, cname, models, dim, prompt_set=cname, vote_cap=vote_cap, pairing=pairing,
                                         max_turns=1, max_new_tokens=cfg["max_new_tokens"],
                                         temperature=cfg["temperature"], created_by=created_by,
                                         allow_test_models=allow_test_models)
            db.table("campaigns").update(camp["id"], {"compare_run_id": run_id})
            made.append({**camp, "compare_run_id": run_id, "prompts": len(prompts)})
    return made
