"""The report's settings: light to import (no plotly), so the command line can read its options."""

from __future__ import annotations

from dataclasses import dataclass

from sae_translate.errors import UserError


@dataclass
class ReportConfig:
    run: str  # run directory (stores/RUN)
    out: str | None = None  # default: RUN/report.html
    db: str | None = None  # default: stores/labels.duckdb (optional unless given)
    run_id: str | None = None  # defaults to the run directory's name, as label does
    features: tuple[int, ...] = ()  # cards for exactly these features
    max_cards: int = 50  # cards drawn when no features are named
    max_points: int = 5000  # points per scatter plot, sampled beyond this
    n_top_windows: int = 8  # windows per card and kind
    latent_sentences: int = 400  # sentences per language in the latent view
    max_log_points: int = 1000  # points per training curve (bucket means beyond)
    seed: int = 0
    title: str | None = None  # page title; default: "sae-translate report: RUN_ID"

    def validate(self) -> None:
        if self.max_cards < 0 or self.max_points < 1:
            raise UserError("--max-cards must be >= 0 and --max-points >= 1")
        for option, value in (("--latent-sentences", self.latent_sentences), ("--max-log-points", self.max_log_points)):
            if value < 1:
                raise UserError(f"{option} must be 1 or more (got {value})")
        if self.n_top_windows < 0:
            raise UserError(f"--n-top-windows must be 0 or more (got {self.n_top_windows})")
