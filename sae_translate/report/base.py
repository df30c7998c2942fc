"""The report's building blocks: the page that collects figures, HTML tables and notes (the config
lives in config.py and is re-exported here)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from sae_translate.report.config import ReportConfig as ReportConfig  # re-exported

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
GROUND_TRUTH = "ground_truth"
TRANSLATOR_LOG_GLOB = "translator*/log.jsonl"
# Keys of a training-log record that index it rather than measure it.
STEP_KEYS = ("step", "global_step", "iteration", "iter")
NOT_PLOTTED = frozenset(STEP_KEYS) | {"time", "seconds", "elapsed", "wall", "epoch", "tokens"}


@dataclass
class ReportResult:
    path: Path
    n_figures: int
    n_cards: int
    size_bytes: int
    notes: dict[str, str] = field(default_factory=dict)  # section -> why it has no figure


# ------------------------------------------------------------------ figures and page assembly


def _count(values: Any) -> int:
    if values is None:
        return 0
    try:
        return len(values)
    except TypeError:
        return 0


def figure_has_data(fig: go.Figure) -> bool:
    """True when at least one trace has points (x, y, z or values)."""
    return any(max(_count(getattr(t, k, None)) for k in ("x", "y", "z", "values")) > 0 for t in fig.data)


class Page:
    """Collects figures as JSON specs beside their placeholder divs."""

    def __init__(self) -> None:
        self.n_figures = 0

    def figure(self, fig: go.Figure, height: int = 360) -> str:
        if not figure_has_data(fig):
            raise ValueError("a report figure must have data; give a note instead")
        fig.update_layout(height=height, margin=dict(l=60, r=20, t=50, b=50), template="plotly_white")
        fid = f"fig-{self.n_figures}"
        self.n_figures += 1
        # "</" inside a JSON string would end the script element early; "<\/" is the same JSON.
        spec = pio.to_json(fig, validate=False).replace("</", "<\\/")
        return (
            f'<div class="report-figure" id="{fid}"></div>'
            f'<script type="application/json" id="{fid}-spec">{spec}</script>'
        )


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[Any]], cls: str = "table") -> str:
    head = (
        ""
        if header is None
        else ("<thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr></thead>")
    )
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{cls}">{head}<tbody>{body}</tbody></table>'


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, (float, np.floating)):
        return "–" if not math.isfinite(value) else f"{value:.3g}"
    return html.escape(str(value))
