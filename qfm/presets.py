"""Named QFM-IQM configurations: the ablation grid of method.md §4 as config overrides.

A preset is a dict of QFM config values; keys the user sets explicitly win over it
(:func:`qfm.model.QFM.resolve_config`). ``full`` is the default config (A5) and overrides nothing.
"""

from __future__ import annotations

from typing import Any

from benchmark.models import ConfigError

__all__ = ["PRESETS", "GRID_IDS", "preset_overrides"]

_NO_TEACHER = {"teacher": "none", "kd_loss": "none"}
_NO_NOISE = {"adv_mode": "none"}
_NO_GATE = {"gate": "none"}

PRESETS: dict[str, dict[str, Any]] = {
    # A0: the DEIQT baseline computed by QFM's code path (also provides the teachers)
    "deiqt": {**_NO_TEACHER, **_NO_NOISE, **_NO_GATE, "memory_sources": "student"},
    # A1: distillation from the frozen DEIQT only
    "+distill": {**_NO_NOISE, **_NO_GATE},
    # A2: matching against the student's own memory, no teacher at all
    "+match-nomem": {**_NO_TEACHER, **_NO_GATE, "memory_sources": "student"},
    # A3: matching with student + teacher memory, plus distillation
    "+match": {**_NO_GATE},
    # A4: the gate alone
    "+gate": {**_NO_TEACHER, **_NO_NOISE, "memory_sources": "student"},
    # A5: everything at its default
    "full": {},
    # A6: the sharpness-aware line search (not from the paper)
    "sam": {"adv_mode": "sam_line"},
    # C1–C3: controls for what the matched noise adds
    "ctrl-gaussian": {"adv_mode": "gaussian"},
    "ctrl-random-partner": {"adv_mode": "random_partner"},
    "ctrl-random-pick": {"match_select": "random"},
    # V1, V2: teacher and target variants
    "ema-teacher": {"teacher": "ema"},
    "patch-target": {"perturb_target": "patch"},
    "both-target": {"perturb_target": "both"},
}

#: row ids of the §4 grid → preset names
GRID_IDS = {"A0": "deiqt", "A1": "+distill", "A2": "+match-nomem", "A3": "+match", "A4": "+gate",
            "A5": "full", "A6": "sam", "C1": "ctrl-gaussian", "C2": "ctrl-random-partner",
            "C3": "ctrl-random-pick", "V1": "ema-teacher", "V2": "patch-target",
            "V2b": "both-target"}


def preset_overrides(name: str) -> dict[str, Any]:
    """The overrides of a preset, by name or by its grid id (A0…V2b)."""
    key = GRID_IDS.get(name, name)
    if key not in PRESETS:
        raise ConfigError(f"unknown QFM preset {name!r} (known: {', '.join(PRESETS)}; "
                          f"or a grid id {', '.join(GRID_IDS)})")
    return dict(PRESETS[key])
