"""The score stage: labels graded on held-out windows by the embedding, detection, simulation and
ground-truth scorers."""

from sae_translate.score.stage import (
    SCORERS,
    ScoreConfig,
    ScoreResult,
    ScoreSummary,
    concept_kind_table,
    concept_recovery_table,
    label_and_score,
    score_run,
    summary_table,
)

__all__ = [
    "SCORERS",
    "ScoreConfig",
    "ScoreResult",
    "ScoreSummary",
    "concept_kind_table",
    "concept_recovery_table",
    "label_and_score",
    "score_run",
    "summary_table",
]
