"""Pipelines: the whole method in one run, from a recipe (recipe.py) through ordinary stage runs (runner.py).

This package sits above the stages: a stage knows nothing of pipelines, and every stage run a pipeline makes
is an ordinary run, browsable on its own page and in the lineage view.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from cai.pipeline.recipe import RecipeError, apply_sets, check, dump, load

__all__ = ["RecipeError", "apply_sets", "check", "create", "dump", "load", "resolve"]


def resolve(db: Database, source: str, sets: list[str], text: str | None = None) -> tuple[dict[str, Any], str]:
    """(checked recipe with its references pinned, sha256 of the recipe's text) for a recipe file or shipped
    name (`source`), or for recipe `text` pasted in a form, plus `--set`s."""
    import hashlib

    from cai.pipeline.recipe import parse
    from cai.pipeline.runner import pin

    if text is None:
        recipe, digest = load(source)
    else:
        recipe, digest = parse(text, where=source or "recipe"), hashlib.sha256(text.encode()).hexdigest()
    return pin(db, _files(check(apply_sets(recipe, sets)))), digest


def _files(recipe: dict[str, Any]) -> dict[str, Any]:
    """Input files as absolute paths (a relative one is looked up here, then in the project folder)."""
    from pathlib import Path

    from cai.pipeline.recipe import RECIPES_DIR

    if recipe["hhh_data"]:
        given = Path(recipe["hhh_data"]).expanduser()
        found = next((p for p in (given, RECIPES_DIR.parent / given) if p.is_file()), None)
        if found is None:
            raise RecipeError(f"hhh_data: no such file: {recipe['hhh_data']}")
        recipe = {**recipe, "hhh_data": str(found.resolve())}
    return recipe


def create(db: Database, source: str, sets: list[str], text: str | None = None) -> int:
    """Create a pipeline run (queued, not started) for a recipe file, a shipped recipe's name or recipe
    `text`; its run id."""
    from cai import runs, store
    from cai.stages.pipeline import PipelineConfig

    recipe, digest = resolve(db, source, sets, text)
    config = PipelineConfig(recipe=str(source), sets="\n".join(sets), spec=store.dumps(recipe),
                            recipe_sha256=digest)
    return runs.create_run(db, config, **runs.resolve_links(db, config))
