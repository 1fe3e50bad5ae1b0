"""Scorers: a crop in, a distribution over the K quality levels out.

The shared pieces and the backend registry live in :mod:`dogiqa.scoring.base`; the backends
(``classical``, ``hf``, ``openai``) in their own modules. This module is the public entry:
check a ``score`` params section and build its scorer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dogiqa import config
from dogiqa.scoring.base import (
    BACKENDS,
    MAX_ASPECT,
    READOUTS,
    CropErrors,
    LevelScorer,
    LevelScores,
    Scorer,
    ScorerBackend,
    ScorerUnit,
    backend,
    error_scores,
    fallback_scores,
    find_level_token_ids,
    first_line,
    from_logits,
    from_position,
    from_probs,
    measure_stream,
    one_hot,
    parse_level,
    prepare_crop,
    resize_crop,
    setup_problem,
    subsection,
)

__all__ = [
    "BACKENDS",
    "MAX_ASPECT",
    "READOUTS",
    "CropErrors",
    "LevelScorer",
    "LevelScores",
    "Scorer",
    "ScorerBackend",
    "ScorerUnit",
    "backend",
    "build_scorer",
    "check_section",
    "error_scores",
    "fallback_scores",
    "find_level_token_ids",
    "first_line",
    "from_logits",
    "from_position",
    "from_probs",
    "measure_stream",
    "one_hot",
    "parse_level",
    "prepare_crop",
    "resize_crop",
    "setup_problem",
]


def check_section(section: Mapping[str, Any]) -> ScorerBackend:
    """Validate the chosen backend's subsection of ``score`` (ParamError names the param)."""
    name = config.get_choice(section, "score", "backend", BACKENDS)
    chosen = backend(name)
    chosen.check(subsection(section, name))
    return chosen


def build_scorer(section: Mapping[str, Any]) -> Scorer:
    """The (main) scorer the ``score`` params section describes."""
    return check_section(section).units(section)[0].build()
