"""Recipes: the whole method as one YAML file, checked against the stage registry before anything runs.

A recipe names the models, the constitution, the prompt and preference sets once, and has one section per
stage whose keys are exactly that stage's config fields (the registry is the one source), plus `skip: true`
or `reuse: RUN_ID`. The pipeline fills in what a stage takes from the stages before it (the SL run's chains,
the SFT model, the AI preference set, the PM) unless the section names it itself. `--set a.b=v` edits a
recipe before it is checked; the checked, resolved recipe is what a pipeline run stores and resumes from.
`serve: [policy, feedback]` shares one vLLM engine per named model across the stages (cai.engines).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from cai.config import ConfigError, StageConfig
from cai.stages import REGISTRY

# Stages in the order a pipeline runs them: recipe section -> registry kind.
STAGES: dict[str, str] = {
    "sl": "sl",
    "sft": "sft",
    "pairs": "pairs",
    "label": "label",
    "pm": "pm",
    "scores": "revision-scores",
    "rl": "rl",
    "dpo": "dpo",
    "hhh": "hhh",
    "agreement": "agreement",
}
# What each stage hands on to the stages after it, read from its run: the run id or a named result.
OUTPUTS: dict[str, str] = {"sl": "run", "pairs": "run", "sft": "model", "label": "pref_set", "pm": "model",
                           "rl": "model", "dpo": "model"}
TOP_LEVEL = {"name", "description", "policy", "feedback", "pm_base", "constitution", "seed", "prompts",
             "human_prefs", "hhh_data", "stages", "serve"}
# What `serve:` may name: the recipe's models, or a training stage whose model later stages use (cai.engines).
SERVABLE = ("policy", "feedback", "sft", "rl", "dpo")
PROMPT_KEYS = {"red_team", "helpful"}
CONTROL = {"skip", "reuse"}
RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


class RecipeError(ValueError):
    """A recipe (or a --set) is invalid; the message names the key."""


def load(source: str | Path) -> tuple[dict[str, Any], str]:
    """(recipe, sha256 of its text) from a YAML file path, or the name of a shipped recipe ("smoke")."""
    path = Path(source).expanduser()
    if not path.is_file() and (RECIPES_DIR / f"{source}.yaml").is_file():
        path = RECIPES_DIR / f"{source}.yaml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
        raise RecipeError(f"no recipe file {str(source)!r} (shipped recipes: {shipped})")
    text = path.read_text(encoding="utf-8")
    return parse(text, where=str(path)), hashlib.sha256(text.encode()).hexdigest()


def parse(text: str, where: str = "recipe") -> dict[str, Any]:
    try:
        recipe = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"{where}: a recipe is a mapping of keys (name, policy, stages, ...)")
    return recipe


def apply_sets(recipe: Mapping[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    """A copy of `recipe` with each "a.b=value" applied; a stage key may be given without `stages.`
    (`sl.revisions=2` means `stages.sl.revisions`). Values are read as YAML (2, 0.5, true, text).
    `sl.reuse=12` replaces the whole section with the existing run 12."""
    out = json.loads(json.dumps(recipe))
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set {item!r}: write KEY=VALUE, e.g. sl.revisions=2")
        path = key.strip().split(".")
        if path[0] in STAGES:
            path = ["stages", *path]
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"--set {item!r}: {part} is not a section")
            node = child
        if path[0] == "stages" and path[-1] == "reuse":
            node.clear()  # a reused run replaces the whole section: its other settings would not apply
        node[path[-1]] = value
    return out


def check(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe with defaults filled in, or a RecipeError naming the first wrong key.

    Every stage section is built into its stage config with placeholders for what earlier stages will
    hand on, so a wrong type, range or field name is refused before any stage runs.
    """
    unknown = sorted(set(recipe) - TOP_LEVEL)
    if unknown:
        raise RecipeError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(TOP_LEVEL))})")
    if not recipe.get("policy"):
        raise RecipeError("policy: name the policy model (a registered name, 'default', 'tiny' or a path)")
    prompts = recipe.get("prompts") or {}
    if not isinstance(prompts, dict) or set(prompts) - PROMPT_KEYS:
        raise RecipeError(f"prompts: a mapping with the keys {', '.join(sorted(PROMPT_KEYS))}")
    stages = recipe.get("stages") or {}
    if not isinstance(stages, dict) or not stages:
        raise RecipeError(f"stages: name at least one stage ({', '.join(STAGES)})")
    wrong = sorted(set(stages) - set(STAGES))
    if wrong:
        raise RecipeError(f"stages: unknown stage(s) {', '.join(wrong)} (known: {', '.join(STAGES)})")
    seed = recipe.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise RecipeError(f"seed: a whole number, got {seed!r}")
    serve = recipe.get("serve") or []
    if isinstance(serve, str):
        serve = [serve]
    if not isinstance(serve, list) or set(map(str, serve)) - set(SERVABLE):
        raise RecipeError(f"serve: a list of {', '.join(SERVABLE)} (models to share one vLLM engine each), "
                          f"got {recipe.get('serve')!r}")
    out = {
        "name": str(recipe.get("name") or "pipeline"),
        "description": str(recipe.get("description") or ""),
        "policy": str(recipe["policy"]),
        "feedback": str(recipe.get("feedback") or recipe["policy"]),
        "pm_base": str(recipe.get("pm_base") or recipe.get("feedback") or recipe["policy"]),
        "constitution": str(recipe.get("constitution") or ""),
        "seed": seed,
        "prompts": {k: str(v) for k, v in prompts.items() if v},
        "human_prefs": str(recipe.get("human_prefs") or ""),
        "hhh_data": str(recipe.get("hhh_data") or ""),
        "stages": {},
    }
    if serve:  # only when given: a recipe without engines stores what it stored before
        out["serve"] = list(dict.fromkeys(map(str, serve)))
    for stage in STAGES:
        section = stages.get(stage)
        if section is None or section is False:
            continue
        if section is True:
            section = {}
        if not isinstance(section, dict):
            raise RecipeError(f"stages.{stage}: a mapping of {STAGES[stage]} config fields (or skip: true)")
        section = dict(section)
        if section.get("skip"):
            continue
        if "reuse" in section:
            reuse = section["reuse"]
            if not isinstance(reuse, int) or isinstance(reuse, bool) or reuse < 1 or set(section) != {"reuse"}:
                raise RecipeError(f"stages.{stage}.reuse: a run id on its own, e.g. reuse: 12")
            out["stages"][stage] = {"reuse": reuse}
            continue
        section.pop("skip", None)
        config_class = REGISTRY[STAGES[stage]].config
        names = {f.name for f in dataclasses.fields(config_class)}
        unknown = sorted(set(section) - names)
        if unknown:
            raise RecipeError(f"stages.{stage}: unknown field(s) {', '.join(unknown)} "
                              f"(fields of {STAGES[stage]}: {', '.join(sorted(names))})")
        out["stages"][stage] = section
    for stage in out["stages"]:
        for needed in needs(stage):
            if needed not in out["stages"]:
                raise RecipeError(f"stages.{stage} needs stage {needed} (add a {needed} section, "
                                  f"or `{needed}: {{reuse: RUN_ID}}` to take an existing run)")
        if "reuse" not in out["stages"][stage]:
            placeholders = {k: ("pending" if OUTPUTS[s] != "run" else 1) for k, s in wired_from(stage).items()}
            try:
                config(out, stage, placeholders)
            except ConfigError as exc:
                raise RecipeError(f"stages.{stage}: {exc}") from None
    return out


def wired_from(stage: str) -> dict[str, str]:
    """Config field -> the earlier stage whose output it takes, for `stage`'s wiring."""
    return {
        "sl": {},
        "sft": {"chains": "sl"},
        "pairs": {"model": "sft"},
        "label": {"pairs": "pairs"},
        "pm": {"ai_prefs": "label"},
        "scores": {"run": "sl", "pm": "pm"},
        "rl": {"policy": "sft", "reward_model": "pm"},
        "dpo": {"policy": "sft", "prefs": "label"},
        "hhh": {},
        "agreement": {},
    }[stage]


def needs(stage: str) -> list[str]:
    """Earlier stages `stage` cannot run without (the SFT model is optional: without it, the policy)."""
    return [s for s in wired_from(stage).values() if s != "sft"]


def config(recipe: Mapping[str, Any], stage: str, outputs: Mapping[str, Any]) -> StageConfig:
    """The stage config of `stage`: recipe-wide values, then the outputs of earlier stages (field -> value,
    or stage -> value), then the section's own values, which win."""
    kind = STAGES[stage]
    config_class = REGISTRY[kind].config
    names = {f.name for f in dataclasses.fields(config_class)}
    prompts = recipe.get("prompts", {})
    policy = outputs.get("sft") or recipe["policy"]
    version = _constitution(recipe.get("constitution", ""))
    common: dict[str, Any] = {
        "seed": recipe.get("seed", 0),
        "constitution": version[0],
        "constitution_version": version[1],
    }
    by_stage: dict[str, dict[str, Any]] = {
        "sl": {"prompts": prompts.get("red_team", ""), "model": recipe["policy"],
               "helpful_prompts": prompts.get("helpful", "")},
        "pairs": {"prompts": prompts.get("red_team", ""), "model": policy},
        "label": {"feedback_model": recipe["feedback"]},
        "pm": {"model": recipe["pm_base"], "human_prefs": recipe.get("human_prefs", "")},
        "rl": {"policy": policy, "prompts": prompts.get("red_team", ""), "helpful_prompts": prompts.get("helpful", "")},
        "dpo": {"policy": policy},
        "hhh": {"model": recipe["feedback"], "data": recipe.get("hhh_data", "")},
        "agreement": {"feedback_model": recipe["feedback"], "prefs": recipe.get("human_prefs", "")},
    }
    values = {**common, **by_stage.get(stage, {})}
    for field, source in wired_from(stage).items():
        if source in outputs:
            values[field] = outputs[source]
        elif field in outputs:
            values[field] = outputs[field]
    values.update(recipe["stages"].get(stage, {}))
    return config_class.from_dict({k: v for k, v in values.items() if k in names})


def _constitution(spec: str) -> tuple[str, int | None]:
    name, sep, version = str(spec).partition("@")
    if not sep:
        return name, None
    if not version.isdigit():
        raise RecipeError(f"constitution: {spec!r} is not NAME or NAME@N")
    return name, int(version)


def dump(recipe: Mapping[str, Any]) -> str:
    """The recipe as YAML, keys in recipe order (what `cai pipeline show` prints and the form edits)."""
    return yaml.safe_dump(dict(recipe), sort_keys=False, allow_unicode=True)
