"""Recipes: the whole method as one YAML file, checked against the stage registry before anything runs.

A recipe names the models, the constitution, the prompt and preference sets once, and has one section per
stage whose keys are exactly that stage's config fields (the registry is the one source), plus `skip: true`
or `reuse: RUN_ID`. The pipeline fills in what a stage takes from the stages before it (the SL run's chains,
the SFT model, the AI preference set, the PM) unless the section names it itself. `--set a.b=v` edits a
recipe before it is checked; the checked, resolved recipe is what a pipeline run stores and resumes from.

Sweeps (`sweep: {sl.principles: [1, 4, 16], sl.mode: [critique, direct], policy: [a, b]}`): SWEEPS says, for
each key, what a value sets and which stages depend on it. Each key is varied on its own with the other keys
at their first value (the paper's ablations, not a grid); the first values together are the main line, whose
outputs the stages that do not depend on a key take. `plan` lists the stage runs that gives, in order.
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
    "temperature": "temperature",
    "dpo": "dpo",
    "compare": "compare",
    "hhh": "hhh",
    "agreement": "agreement",
}
# What each stage hands on to the stages after it, read from its run: the run id or a named result.
OUTPUTS: dict[str, str] = {"sl": "run", "pairs": "run", "sft": "model", "label": "pref_set", "pm": "model",
                           "rl": "model", "dpo": "model"}
TOP_LEVEL = {"name", "description", "policy", "feedback", "pm_base", "constitution", "seed", "prompts",
             "human_prefs", "hhh_data", "stages", "sweep",
             "serve"}
# What `serve:` may name: the recipe's models, or a training stage whose model later stages use (cai.engines).
SERVABLE = ("policy", "feedback", "sft", "rl", "dpo")
PROMPT_KEYS = {"red_team", "helpful"}
CONTROL = {"skip", "reuse"}
RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


class RecipeError(ValueError):
    """A recipe (or a --set) is invalid; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A recipe key a sweep may vary: the stage section it sets (None: top level), the field, the stages that
    depend on it (each runs once per value; every other stage runs once, on the main line)."""

    section: str | None
    field: str
    stages: tuple[str, ...]
    values: str  # what a value may be, for the error message


SWEEPS: dict[str, Sweep] = {
    # Fig. 6: only the chains and their PM scores change; the SFT model and all after it take the main line.
    "sl.principles": Sweep("sl", "num_principles", ("sl", "scores"), "whole numbers >= 1, e.g. [1, 4, 16]"),
    # Fig. 7: critiqued vs direct revisions, the same two stages.
    "sl.mode": Sweep("sl", "direct", ("sl", "scores"), "critique or direct"),
    # Fig. 3: every stage the policy feeds; hhh and agreement read only the feedback model and are shared.
    "policy": Sweep(None, "policy", ("sl", "sft", "pairs", "label", "pm", "scores", "rl", "temperature", "dpo",
                                     "compare"), "model names"),
}


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
    if recipe.get("sweep"):
        out["sweep"] = check_sweep(recipe["sweep"], out)
    return out


def _flat(sweep: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"sl": {"principles": [..]}} (what `--set sweep.sl.principles=[..]` makes) -> {"sl.principles": [..]}."""
    out: dict[str, Any] = {}
    for key, value in sweep.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def sweep_value(key: str, value: Any) -> Any:
    """A sweep value as the recipe stores it, or a RecipeError naming the key."""
    ok = {"sl.principles": isinstance(value, int) and not isinstance(value, bool) and value >= 1,
          "sl.mode": value in ("critique", "direct"),
          "policy": isinstance(value, str) and bool(value.strip())}[key]
    if not ok:
        raise RecipeError(f"sweep.{key}: {value!r} is not a value of it ({SWEEPS[key].values})")
    return value


def check_sweep(sweep: Any, recipe: dict[str, Any]) -> dict[str, list[Any]]:
    """The checked sweep of a checked recipe: known keys, two or more distinct values each, the stages it
    varies present and not reused, and each value's stage configs valid."""
    if not isinstance(sweep, dict):
        raise RecipeError("sweep: a mapping of KEY: [values], e.g. sweep: {sl.principles: [1, 4, 16]}")
    out: dict[str, list[Any]] = {}
    for key, values in _flat(sweep).items():
        if key not in SWEEPS:
            raise RecipeError(f"sweep.{key}: not a key a sweep can vary (known: {', '.join(SWEEPS)})")
        if not isinstance(values, list) or len(values) < 2:
            raise RecipeError(f"sweep.{key}: a list of two or more values ({SWEEPS[key].values}), got {values!r}")
        values = [sweep_value(key, v) for v in values]
        if len(set(values)) != len(values):
            raise RecipeError(f"sweep.{key}: a value is listed twice in {values!r}")
        spec = SWEEPS[key]
        if spec.section and spec.section not in recipe["stages"]:
            raise RecipeError(f"sweep.{key}: the recipe has no {spec.section} stage to vary")
        for stage in spec.stages:
            if "reuse" in recipe["stages"].get(stage, {}):
                raise RecipeError(f"sweep.{key}: stages.{stage} reuses run {recipe['stages'][stage]['reuse']}, "
                                  f"but it depends on {key} and runs once per value")
        out[key] = values
    out = dict(sorted(out.items()))  # the order the stored (JSON, sorted) recipe has: the plan's order
    checked = {**recipe, "sweep": out}
    for point in variants(checked)[1:]:
        key = next(k for k in point if point[k] != out[k][0])
        for stage in stages_of(checked, key):
            placeholders = {k: ("pending" if OUTPUTS[s] != "run" else 1) for k, s in wired_from(stage).items()}
            try:
                config(at(checked, point), stage, placeholders)
            except ConfigError as exc:
                raise RecipeError(f"sweep.{key}={point[key]}: stages.{stage}: {exc}") from None
    return out


def stages_of(recipe: Mapping[str, Any], key: str) -> list[str]:
    """The recipe's stages that depend on sweep `key`, in run order."""
    return [s for s in STAGES if s in recipe["stages"] and s in SWEEPS[key].stages]


def keys_of(recipe: Mapping[str, Any], stage: str) -> list[str]:
    """The swept keys `stage` depends on (none: it runs once, on the main line)."""
    return [k for k in (recipe.get("sweep") or {}) if stage in SWEEPS[k].stages]


def variants(recipe: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The sweep's points: the main line (every key at its first value), then each key's other values, one key
    at a time with the others at their first value. [{}] without a sweep."""
    sweep = recipe.get("sweep") or {}
    base = {k: v[0] for k, v in sweep.items()}
    return [base] + [{**base, k: v} for k, values in sweep.items() for v in values[1:]]


def plan(recipe: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every stage run of a pipeline in order: (stage, the swept values it runs at, {} when it has none)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for stage in (s for s in STAGES if s in recipe["stages"]):
        keys = keys_of(recipe, stage)
        seen: list[dict[str, Any]] = []
        for point in variants(recipe):
            part = {k: point[k] for k in keys}
            if part not in seen:
                seen.append(part)
                out.append((stage, part))
    return out


def project(recipe: Mapping[str, Any], stage: str, point: Mapping[str, Any]) -> dict[str, Any]:
    """The values of `point` that `stage` depends on (a key `point` lacks takes its first value)."""
    sweep = recipe.get("sweep") or {}
    return {k: point.get(k, sweep[k][0]) for k in keys_of(recipe, stage)}


def sweep_id(point: Mapping[str, Any]) -> str:
    """How a pipeline link names the values of its stage run: JSON, "" for a stage run shared by all."""
    return json.dumps(dict(point), sort_keys=True) if point else ""


def at(recipe: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe as it reads at a sweep point: each key's value set where it belongs."""
    out = json.loads(json.dumps(recipe))
    for key, value in point.items():
        spec = SWEEPS[key]
        if spec.section is None:
            out[spec.field] = value
        else:
            out["stages"][spec.section][spec.field] = (value == "direct") if key == "sl.mode" else value
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
        "temperature": {"policy": "rl", "pm": "pm"},
        "dpo": {"policy": "sft", "prefs": "label"},
        "compare": {},  # its models and PM: compare_values
        "hhh": {},
        "agreement": {},
    }[stage]


def needs(stage: str) -> list[str]:
    """Earlier stages `stage` cannot run without (the SFT and RL models are optional: without them, the policy
    before them)."""
    return [s for s in wired_from(stage).values() if s not in ("sft", "rl")]


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
        "temperature": {"policy": policy, "prompts": prompts.get("red_team", ""), "offset": held_out(recipe)},
        "hhh": {"model": recipe["feedback"], "data": recipe.get("hhh_data", "")},
        "agreement": {"feedback_model": recipe["feedback"], "prefs": recipe.get("human_prefs", "")},
    }
    if stage == "compare":
        by_stage["compare"] = compare_values(recipe, outputs)
    values = {**common, **by_stage.get(stage, {})}
    for field, source in wired_from(stage).items():
        if source in outputs:
            values[field] = outputs[source]
        elif field in outputs:
            values[field] = outputs[field]
    values.update(recipe["stages"].get(stage, {}))
    return config_class.from_dict({k: v for k, v in values.items() if k in names})


def held_out(recipe: Mapping[str, Any]) -> int:
    """How many red-team prompts the stages before the temperature stage may have used (the largest `limit` of
    sl, pairs and rl): it answers only the prompts after them. 0 when one of them has no limit (it uses all)."""
    limits = [recipe["stages"][s].get("limit") for s in ("sl", "pairs", "rl") if s in recipe["stages"]
              and "reuse" not in recipe["stages"][s]]
    return 0 if not limits or None in limits else max(limits)


# The models a compare stage rates (paper Figure 2): recipe section -> role, after the base policy.
COMPARED = {"sft": "SL-CAI", "rl": "RL-CAI", "dpo": "DPO"}


def compare_values(recipe: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The compare stage's wiring: the base policy and each stage model of the recipe (SL-CAI, RL-CAI, DPO) with
    its role, the recipe's prompt sets, the feedback model as judge and, with a pm stage, the PM as a second
    judge. Before the stages have run (when a recipe is checked) a model is "pending-STAGE"."""
    models, roles = [recipe["policy"]], ["base"]
    for stage, role in COMPARED.items():
        if stage in recipe["stages"]:
            name = str(outputs.get(stage) or f"pending-{stage}")
            if name not in models:
                models.append(name)
                roles.append(role)
    prompts = recipe.get("prompts", {})
    with_pm = "pm" in recipe["stages"]
    return {"models": ",".join(models), "roles": ",".join(roles), "red_team": prompts.get("red_team", ""),
            "helpful": prompts.get("helpful", ""), "judge_model": recipe["feedback"],
            "judges": "pm,judge" if with_pm else "judge", "pm": str(outputs.get("pm") or "pending") if with_pm else ""}


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
