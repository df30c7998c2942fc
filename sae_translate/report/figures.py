"""The report's sections: each reads a run (and its labels) and adds plotly figures to the page."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sae_translate.errors import UserError
from sae_translate.label.examples import HeldoutSlice, joiner_for
from sae_translate.report.base import (
    GROUND_TRUTH,
    NOT_PLOTTED,
    PALETTE,
    STEP_KEYS,
    TRANSLATOR_LOG_GLOB,
    Page,
    ReportConfig,
    _cell,
    _note,
    _table,
)
from sae_translate.store import db as label_db
from sae_translate.store.h5 import HIST_BINS, HIST_BINS_PER_DECADE, HIST_LO, RunStore
from sae_translate.translator.run import shared_latents


def _histogram(
    values: np.ndarray, bins: int, lo: float | None = None, hi: float | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Bin centres, counts and bin width (the counts, not the values, go into the file)."""
    values = values[np.isfinite(values)]
    lo = float(values.min()) if lo is None else lo
    hi = float(values.max()) if hi is None else hi
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return (edges[:-1] + edges[1:]) / 2, counts, float(edges[1] - edges[0])


def _method_colors(methods: Sequence[str]) -> dict[str, str]:
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted(methods))}


# ------------------------------------------------------------------ label database


@dataclass
class LabelTables:
    """What the report reads of one run from the label database."""

    db: Path
    run_id: str
    scores: dict[str, np.ndarray]  # feature, method, scorer, value
    summary: list[tuple[str, str, float | None, int, int]]  # method, scorer, mean, n, excluded
    concepts: dict[int, tuple[str, float]]  # feature -> (true concept, precision)
    best: dict[int, tuple[str, str, float | None]]  # feature -> (method, label, score; None: unscored)
    # card feature -> method -> (label, rule kind, fidelity on train tokens)
    labels: dict[int, dict[str, list[tuple[str, str | None, float | None]]]]
    examples: dict[str, np.ndarray]  # card windows: feature, kind, rank, ...

    @property
    def methods(self) -> list[str]:
        return sorted({m for per in self.labels.values() for m in per} | set(self.scores["method"]))


def resolve_db(cfg: ReportConfig) -> tuple[Path | None, str]:
    """The database to read, or None with the reason; a named but missing --db is an error."""
    if cfg.db is not None:
        path = Path(cfg.db)
        if not path.is_file():
            raise UserError(
                f"no label database at {path}; run `sae-translate label --run "
                f"{cfg.run} --db {path}` first or leave out --db"
            )
        return path, ""
    if label_db.DEFAULT_DB.is_file():
        return label_db.DEFAULT_DB, ""
    return None, (
        f"no label database at {label_db.DEFAULT_DB}; run `sae-translate label --run "
        f"{cfg.run}` to add labels and scores"
    )


def read_label_tables(db: Path, run_id: str, card_features: np.ndarray) -> LabelTables | None:
    """The run's scores, summaries, true concepts, and the labels and windows of card features.

    None when the database holds no labels for ``run_id``.
    """
    con = label_db.connect_readonly(db)
    try:
        found = con.execute("SELECT count(*) FROM labels WHERE run_id = ?", [run_id]).fetchone()
        if not found or found[0] == 0:
            return None
        scores = con.execute(
            "SELECT feature, method, scorer, value FROM scores WHERE run_id = ? ORDER BY method, scorer, feature",
            [run_id],
        ).fetchnumpy()
        summary = con.execute(
            "SELECT method, scorer, mean, n_scored, n_excluded FROM score_summary "
            "WHERE run_id = ? ORDER BY method, scorer",
            [run_id],
        ).fetchall()
        concepts = con.execute(
            "SELECT feature, concept, precision FROM true_concepts WHERE run_id = ? AND status = 'planted'", [run_id]
        ).fetchall()
        best = con.execute(
            "SELECT feature, method, label, score FROM best_labels WHERE run_id = ?", [run_id]
        ).fetchall()
        feats = [int(f) for f in card_features]
        # databases written before schema 5 have no fidelity column (it is added on their next write)
        has_fidelity = con.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'labels' AND column_name = 'fidelity'"
        ).fetchone()
        fidelity = "fidelity" if has_fidelity and has_fidelity[0] else "NULL"
        label_rows = con.execute(
            f"SELECT feature, method, label, rule_kind, {fidelity} FROM labels WHERE run_id = ? AND feature IN "
            "(SELECT unnest(?::INTEGER[])) ORDER BY feature, method, rank",
            [run_id, feats],
        ).fetchall()
        examples = con.execute(
            "SELECT feature, kind, rank, activation, seq, start, stop FROM examples "
            "WHERE run_id = ? AND kind IN ('top', 'quantile') AND feature IN "
            "(SELECT unnest(?::INTEGER[])) ORDER BY feature, kind, rank",
            [run_id, feats],
        ).fetchnumpy()
    except label_db.duckdb.Error as e:
        raise UserError(f"cannot read {db}: {str(e).splitlines()[0]}; is it a label database?") from e
    finally:
        con.close()
    labels: dict[int, dict[str, list[tuple[str, str | None, float | None]]]] = {}
    for f, method, text, kind, fid in label_rows:
        labels.setdefault(int(f), {}).setdefault(method, []).append((text, kind, fid))
    return LabelTables(
        db=db,
        run_id=run_id,
        scores={k: np.asarray(v) for k, v in scores.items()},
        summary=[tuple(r) for r in summary],
        concepts={int(f): (c, float(p)) for f, c, p in concepts},
        best={int(f): (m, lab, None if s is None else float(s)) for f, m, lab, s in best},
        labels=labels,
        examples={k: np.asarray(v) for k, v in examples.items()},
    )


# ------------------------------------------------------------------ sections


def _score_text(score: float | None) -> str:
    """A best label's score as the hover shows it (None: a feature the ranking scorer leaves out)."""
    return f"{label_db.RANKING_SCORER} {score:.2f}" if score is not None else f"no {label_db.RANKING_SCORER} score"


def features_section(page: Page, run: RunStore, tables: LabelTables | None, cfg: ReportConfig) -> str:
    stats = run.stats
    alive = np.flatnonzero(stats.count > 0)
    freq, fmax = stats.frequency, stats.max
    parts = []
    n_dense = int((freq > 0.1).sum())
    parts.append(
        f"<p>{len(alive):,} of {run.d_sae:,} features fire on the train split "
        f"({run.d_sae - len(alive):,} dead, {n_dense:,} denser than 10% of tokens).</p>"
    )
    if len(alive) == 0:
        return "".join(parts) + _note("No feature fires on the train split: nothing to plot.")

    x, y, width = _histogram(np.log10(freq[alive]), bins=50)
    fig = go.Figure(
        go.Bar(
            x=x,
            y=y,
            width=width,
            marker_color=PALETTE[0],
            name="features",
            hovertemplate="log10 frequency %{x:.2f}<br>%{y} features<extra></extra>",
        )
    )
    fig.update_layout(
        title="Feature density",
        xaxis_title="log10 firing frequency (share of train tokens)",
        yaxis_title="features",
        bargap=0,
    )
    parts.append(page.figure(fig))

    x, y, width = _histogram(np.log10(np.maximum(fmax[alive], 1e-12)), bins=50)
    fig = go.Figure(
        go.Bar(
            x=x,
            y=y,
            width=width,
            marker_color=PALETTE[1],
            name="features",
            hovertemplate="log10 max %{x:.2f}<br>%{y} features<extra></extra>",
        )
    )
    fig.update_layout(
        title="Maximum activation per feature", xaxis_title="log10 maximum activation", yaxis_title="features", bargap=0
    )
    parts.append(page.figure(fig))

    rng = np.random.default_rng(cfg.seed)
    shown = alive if len(alive) <= cfg.max_points else np.sort(rng.choice(alive, cfg.max_points, replace=False))
    best = tables.best if tables else {}
    hover = np.array(
        [
            f"feature {f}" + (f": {best[f][1]} ({best[f][0]}, {_score_text(best[f][2])})" if f in best else "")
            for f in shown.tolist()
        ],
        dtype=object,
    )
    scored = np.array([best[f][2] if f in best and best[f][2] is not None else np.nan for f in shown.tolist()])
    has = np.isfinite(scored)
    fig = go.Figure()
    if has.any():  # coloured by the score of the best label
        fig.add_trace(
            go.Scatter(
                x=np.log10(freq[shown[has]]),
                y=fmax[shown[has]],
                mode="markers",
                name="best label score",
                marker=dict(
                    size=5,
                    opacity=0.7,
                    color=scored[has],
                    colorscale="Viridis",
                    colorbar=dict(title=label_db.RANKING_SCORER),
                ),
                text=hover[has],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    if (~has).any():
        fig.add_trace(
            go.Scatter(
                x=np.log10(freq[shown[~has]]),
                y=fmax[shown[~has]],
                mode="markers",
                name="no scored label",
                marker=dict(size=5, opacity=0.5, color="#999" if has.any() else PALETTE[0]),
                text=hover[~has],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    # the colour bar takes the right side: the legend goes under the plot
    fig.update_layout(showlegend=bool(has.any() and (~has).any()), legend=dict(orientation="h", x=0, y=-0.22))
    sampled = f" ({len(shown):,} sampled of {len(alive):,})" if len(shown) < len(alive) else ""
    fig.update_layout(
        title=f"Frequency and maximum activation{sampled}",
        xaxis_title="log10 firing frequency",
        yaxis_title="maximum activation",
        yaxis_type="log",
    )
    parts.append(page.figure(fig, height=460))
    return "".join(parts)


def scores_section(page: Page, tables: LabelTables | None, reason: str) -> str:
    if tables is None:
        return _note(reason)
    s = tables.scores
    parts = []
    if tables.summary:
        scorers = sorted({r[1] for r in tables.summary})
        means = {(m, sc): mean for m, sc, mean, _, _ in tables.summary}
        methods = sorted({r[0] for r in tables.summary})
        parts.append(_table(["method", *scorers], [[m, *[means.get((m, sc)) for sc in scorers]] for m in methods]))
    scorers = [sc for sc in sorted(set(s["scorer"])) if sc != GROUND_TRUTH]
    if not scorers:
        return "".join(parts) + _note(
            f"Run {tables.run_id!r} has labels but no scores yet; "
            "rerun `sae-translate label` on it without `--scorers ''` to score them."
        )
    colors = _method_colors(sorted(set(s["method"])))
    fig = make_subplots(rows=1, cols=len(scorers), subplot_titles=scorers, shared_yaxes=True)
    for col, scorer in enumerate(scorers, start=1):
        in_scorer = s["scorer"] == scorer
        lo = min(0.0, float(s["value"][in_scorer].min()))
        hi = max(1.0, float(s["value"][in_scorer].max()))
        for method in sorted(set(s["method"][in_scorer])):
            values = s["value"][in_scorer & (s["method"] == method)].astype(np.float64)
            counts, edges = np.histogram(values[np.isfinite(values)], bins=20, range=(lo, hi))
            share = counts / max(counts.sum(), 1)
            # a step outline over the bin edges: overlaid methods stay readable, unlike bars
            fig.add_trace(
                go.Scatter(
                    x=edges,
                    y=np.r_[share, share[-1]],
                    mode="lines",
                    line_shape="hv",
                    name=method,
                    legendgroup=method,
                    showlegend=col == 1,
                    line=dict(color=colors[method], width=2),
                    hovertemplate=f"{method}<br>{scorer} from %{{x:.2f}}<br>%{{y:.1%}} of features<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(range=[lo, hi], row=1, col=col)
    fig.update_yaxes(title_text="share of features", row=1, col=1)
    fig.update_layout(title="Label score distributions per method and scorer")
    parts.append(page.figure(fig, height=400))
    return "".join(parts)


def ground_truth_section(page: Page, tables: LabelTables | None, run: RunStore, reason: str) -> str:
    if tables is None:
        return _note(reason)
    s = tables.scores
    gt = s["scorer"] == GROUND_TRUTH
    if not gt.any():
        world = run.attrs.get("world")
        why = (
            "the run has no toy world, so features have no true concept"
            if not world
            else "the run was not scored with ground_truth"
        )
        return _note(f"No ground-truth accuracy: {why}.")
    methods = sorted(set(s["method"][gt]))
    acc = [float(s["value"][gt & (s["method"] == m)].mean()) for m in methods]
    n = [int((gt & (s["method"] == m)).sum()) for m in methods]
    colors = _method_colors(sorted(set(s["method"])))
    fig = go.Figure(
        go.Bar(
            x=methods,
            y=acc,
            marker_color=[colors[m] for m in methods],
            text=[f"{a:.2f} (n={k})" for a, k in zip(acc, n)],
            textposition="outside",
            hovertemplate="%{x}: %{y:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Ground-truth accuracy per method (label names the feature's true concept)",
        yaxis_title="accuracy",
        yaxis_range=[0, 1.1],
    )
    parts = [page.figure(fig)]

    if tables.concepts:
        feats = s["feature"][gt].astype(np.int64)
        concept_of = np.array([tables.concepts.get(int(f), ("", 0.0))[0] for f in feats], dtype=object)
        concepts = sorted({c for c in concept_of if c})
        z = np.full((len(concepts), len(methods)), np.nan)
        counts = np.zeros((len(concepts), len(methods)), dtype=np.int64)
        values, method_of = s["value"][gt], s["method"][gt]
        for i, c in enumerate(concepts):
            for j, m in enumerate(methods):
                sel = (concept_of == c) & (method_of == m)
                if sel.any():
                    z[i, j], counts[i, j] = float(values[sel].mean()), int(sel.sum())
        if concepts:
            fig = go.Figure(
                go.Heatmap(
                    z=z,
                    x=methods,
                    y=concepts,
                    zmin=0,
                    zmax=1,
                    colorscale="Blues",
                    customdata=counts,
                    colorbar=dict(title="accuracy"),
                    hovertemplate="%{y} / %{x}: %{z:.2f} over %{customdata} features<extra></extra>",
                )
            )
            fig.update_layout(title="Ground-truth accuracy per true concept", yaxis_autorange="reversed")
            parts.append(page.figure(fig, height=max(360, 22 * len(concepts) + 120)))
    return "".join(parts)


def read_training_log(path: Path) -> dict[str, np.ndarray]:
    """Numeric series of a JSONL training log (nested objects flattened as ``a.b``), with a
    ``step`` series; records missing a value get NaN there."""
    records = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by a killed run
            if isinstance(record, dict):
                records.append(_flatten(record))
    keys = list(dict.fromkeys(k for r in records for k in r))
    series = {k: np.array([r.get(k, np.nan) for r in records], dtype=np.float64) for k in keys}
    step_key = next((k for k in STEP_KEYS if k in series), None)
    series["step"] = series[step_key] if step_key else np.arange(len(records), dtype=np.float64)
    return series


def _flatten(record: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _bucket_means(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) <= n:
        return x, y
    groups = np.array_split(np.arange(len(x)), n)
    return np.array([x[g].mean() for g in groups]), np.array([y[g].mean() for g in groups])


def translator_section(page: Page, run: RunStore, cfg: ReportConfig) -> tuple[str, str]:
    """Training curves of every translator trained in the run; (html, note when none)."""
    logs = sorted(run.dir.glob(TRANSLATOR_LOG_GLOB))
    if not logs:
        note = f"No translator was trained for this run (no {run.dir / 'translator' / 'log.jsonl'})."
        return _note(note), note
    parts = []
    for path in logs:
        series = read_training_log(path)
        names = [k for k in series if k not in NOT_PLOTTED and np.isfinite(series[k]).any()]
        if not names:
            parts.append(_note(f"{path} has no numeric values to plot."))
            continue
        losses = [k for k in names if "loss" in k.lower()] or names
        others = [k for k in names if k not in losses]
        rows = 2 if others else 1
        fig = make_subplots(
            rows=rows,
            cols=1,
            shared_xaxes=True,
            vertical_spacing=0.08,
            subplot_titles=["losses", "other logged values"][:rows],
        )
        for i, name in enumerate(losses + others):
            x, y = _bucket_means(series["step"], series[name], cfg.max_log_points)
            fig.add_trace(
                go.Scatter(x=x, y=y, mode="lines", name=name, line=dict(color=PALETTE[i % len(PALETTE)])),
                row=1 if name in losses else 2,
                col=1,
            )
        fig.update_xaxes(title_text="step", row=rows, col=1)
        rel = path.relative_to(run.dir)
        fig.update_layout(title=f"Translator training ({rel})")
        parts.append(page.figure(fig, height=380 * rows))
    return "".join(parts), ""


@dataclass
class LatentSample:
    vectors: np.ndarray  # float [n, d]: one pooled shared-latent vector per sentence
    language: list[str]  # language of each row ("feature", "text", ...)
    text: list[str] | None = None  # the sentence of each row, for hover


# The translator module provides `shared_latents(run_dir: Path, n_per_language: int, seed: int)`
# returning a LatentSample-shaped tuple (vectors, language[, text]), or None when no translator
# was trained for the run. Looked up by name so the report does not depend on training code.
def load_latents(run: RunStore, cfg: ReportConfig) -> tuple[LatentSample | None, str]:
    sample = shared_latents(run.dir, cfg.latent_sentences, cfg.seed)
    if sample is None:
        return None, "no translator was trained for this run"
    return LatentSample(*sample), ""


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projection on the first two principal components and their explained-variance shares."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, sing, vt = np.linalg.svd(x, full_matrices=False)
    k = min(2, vt.shape[0])
    coords = x @ vt[:k].T
    if k < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - k)))
    var = sing**2
    share = var[:2] / max(var.sum(), 1e-30)
    return coords, np.pad(share, (0, 2 - len(share)))


def latent_section(page: Page, run: RunStore, cfg: ReportConfig) -> tuple[str, str]:
    sample, why = load_latents(run, cfg)
    if sample is None or len(sample.vectors) < 2:
        note = f"No shared-latent view: {why or 'fewer than two sentences encoded'}."
        return _note(note), note
    coords, share = pca_2d(sample.vectors)
    language = np.asarray(sample.language, dtype=object)
    text = np.asarray(sample.text if sample.text is not None else [""] * len(language), dtype=object)
    fig = go.Figure()
    for i, lang in enumerate(sorted(set(language.tolist()))):
        sel = np.flatnonzero(language == lang)
        if len(sel) > cfg.max_points:
            sel = np.sort(np.random.default_rng(cfg.seed).choice(sel, cfg.max_points, replace=False))
        fig.add_trace(
            go.Scatter(
                x=coords[sel, 0],
                y=coords[sel, 1],
                mode="markers",
                name=lang,
                marker=dict(size=6, opacity=0.6, color=PALETTE[i % len(PALETTE)]),
                text=[str(t)[:120] for t in text[sel]],
                hovertemplate=f"{lang}<br>%{{text}}<extra></extra>",
            )
        )
    fig.update_layout(
        title="Translator shared latent (PCA), coloured by language",
        xaxis_title=f"PC1 ({share[0]:.0%} of variance)",
        yaxis_title=f"PC2 ({share[1]:.0%} of variance)",
    )
    return page.figure(fig, height=480), ""


# ------------------------------------------------------------------ feature cards


def select_card_features(run: RunStore, cfg: ReportConfig) -> np.ndarray:
    """Named features, or up to ``max_cards`` alive ones spread evenly from densest to rarest."""
    if cfg.features:
        feats = np.array(sorted(set(int(f) for f in cfg.features)), dtype=np.int64)
        bad = feats[(feats < 0) | (feats >= run.d_sae)]
        if len(bad):
            raise UserError(f"feature {int(bad[0])} is out of range: the SAE has features 0..{run.d_sae - 1}")
        return feats
    if cfg.max_cards <= 0:
        return np.zeros(0, np.int64)
    stats = run.stats
    alive = np.flatnonzero(stats.count > 0)
    by_density = alive[np.argsort(-stats.frequency[alive], kind="stable")]
    if len(by_density) <= cfg.max_cards:
        return np.sort(by_density)
    pick = np.unique(np.linspace(0, len(by_density) - 1, cfg.max_cards).round().astype(np.int64))
    return np.sort(by_density[pick])


@dataclass
class Windows:
    """Example windows of card features, with every token's activation of its feature."""

    feature: np.ndarray  # int64 [n]
    kind: np.ndarray  # object [n]: "top" / "quantile"
    activation: np.ndarray  # float32 [n]: max activation in the window
    token_ids: np.ndarray  # int32 [n, width], -1 padding
    acts: np.ndarray  # float32 [n, width]


def _window_arrays(
    run: RunStore,
    feature: np.ndarray,
    kind: np.ndarray,
    activation: np.ndarray,
    seq: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
) -> Windows:
    if len(feature) == 0:
        return Windows(
            feature.astype(np.int64), kind, activation, np.zeros((0, 0), np.int32), np.zeros((0, 0), np.float32)
        )
    data = HeldoutSlice.load(run, np.unique(seq))  # any sequences: gives (token, feature) lookups
    width = int((stop - start).max())
    grid = data.local_tokens(seq.astype(np.int64), start.astype(np.int64), width)
    grid = np.where(np.arange(width)[None, :] < (stop - start)[:, None], grid, -1)
    return Windows(
        feature.astype(np.int64),
        kind,
        activation.astype(np.float32),
        data.token_ids(grid),
        data.activations(grid, feature.astype(np.int64)[:, None]),
    )


def card_windows(
    run: RunStore, features: np.ndarray, tables: LabelTables | None, cfg: ReportConfig
) -> tuple[Windows, str]:
    """Held-out windows from the label database, or else windows around the top train
    activations stored in the run; with a line saying where they come from."""
    ex = tables.examples if tables is not None else {}
    if ex and len(ex.get("feature", ())):
        keep = ex["rank"] < cfg.n_top_windows
        cols = {k: v[keep] for k, v in ex.items()}
        return (
            _window_arrays(
                run, cols["feature"], cols["kind"], cols["activation"], cols["seq"], cols["start"], cols["stop"]
            ),
            "Windows are held-out examples sampled by the label stage.",
        )
    positions = run.top_positions[features][:, : cfg.n_top_windows]
    values = run.top_values[features][:, : cfg.n_top_windows]
    row, col = np.nonzero(positions >= 0)
    pos = positions[row, col]
    seq, p = pos // run.ctx, pos % run.ctx
    start = np.clip(p - 11, 0, max(run.ctx - 16, 0))  # mostly left context, as it is causal
    stop = np.minimum(start + 16, run.ctx)
    kind = np.full(len(row), "top", dtype=object)
    return (
        _window_arrays(run, features[row], kind, values[row, col], seq, start, stop),
        "No label database examples: windows are the top train activations stored in the run.",
    )


def _display_token(token: str) -> str:
    return token.replace("\n", "↵").replace("\t", "⇥").replace("\r", "")


def window_html(vocab: list[str], token_ids: np.ndarray, acts: np.ndarray, scale: float, joiner: str) -> str:
    """One window as spans, firing tokens shaded by activation / the feature's maximum."""
    pieces = []
    for t, a in zip(token_ids.tolist(), acts.tolist()):
        if t < 0:
            continue
        text = html.escape(_display_token(vocab[t]) if t < len(vocab) else f"<{t}>")
        if a > 0:
            alpha = min(1.0, 0.15 + 0.85 * a / scale) if scale > 0 else 1.0
            pieces.append(
                f'<span class="tok fire" style="background:rgba(230,85,13,{alpha:.2f})" title="{a:.3g}">{text}</span>'
            )
        else:
            pieces.append(f'<span class="tok">{text}</span>')
    return joiner.join(pieces)


def activation_histogram(run: RunStore, feature: int) -> go.Figure | None:
    """The feature's stored log-spaced histogram of firing values (train split)."""
    hist = run.stats.hist[feature]
    nz = np.flatnonzero(hist)
    if len(nz) == 0:
        return None
    lo, hi = int(nz[0]), int(nz[-1]) + 1
    edges = 10.0 ** (HIST_LO + np.arange(HIST_BINS + 1) / HIST_BINS_PER_DECADE)
    # A filled step line over the bin edges: bars on a log axis get uneven widths.
    fig = go.Figure(
        go.Scatter(
            x=edges[lo : hi + 1],
            y=np.r_[hist[lo:hi], hist[hi - 1]],
            mode="lines",
            line_shape="hv",
            fill="tozeroy",
            line=dict(color=PALETTE[1]),
            hovertemplate="from %{x:.3g}: %{y} tokens<extra></extra>",
        )
    )
    fig.update_layout(
        title="Activation histogram (train)",
        xaxis_title="activation",
        xaxis_type="log",
        yaxis_title="tokens",
        showlegend=False,
    )
    return fig


def _label_html(text: str, kind: str | None, fidelity: float | None = None) -> str:
    """A label's text with the kind of rule it states (token set, category, context, in context)
    and, for a describer's label, its fidelity on train tokens."""
    badge = f' <span class="rule">{html.escape(kind.replace("_", " "))}</span>' if kind else ""
    if fidelity is not None:
        badge += f' <span class="rule" title="fidelity on train tokens">fidelity {fidelity:.2f}</span>'
    return html.escape(text) + badge


def card_html(
    page: Page, run: RunStore, feature: int, tables: LabelTables | None, windows: Windows, joiner: str
) -> str:
    stats = run.stats
    count, freq = int(stats.count[feature]), float(stats.frequency[feature])
    fmax, mean = float(stats.max[feature]), float(stats.mean[feature])
    labels = tables.labels.get(feature, {}) if tables else {}
    search = " ".join([str(feature)] + [cands[0][0] for cands in labels.values() if cands])
    parts = [
        f'<section class="card" id="feature-{feature}" data-search="{html.escape(search.lower())}">',
        f"<h3>Feature {feature}</h3>",
        f'<p class="meta">{count:,} firings · frequency {freq:.3g} · max {fmax:.3g} · mean {mean:.3g}</p>',
    ]
    if tables and feature in tables.concepts:
        concept, precision = tables.concepts[feature]
        parts.append(f'<p class="meta">true concept: <b>{html.escape(concept)}</b> (precision {precision:.2f})</p>')
    left = []
    if labels:
        assert tables is not None  # labels come from the tables
        s = tables.scores
        mine = s["feature"] == feature
        scorers = sorted(set(s["scorer"][mine]))
        rows = []
        for method in sorted(labels):
            cands = labels[method]
            label = _label_html(*cands[0]) + "".join(f'<div class="alt">{_label_html(*c)}</div>' for c in cands[1:4])
            vals = [s["value"][mine & (s["method"] == method) & (s["scorer"] == sc)] for sc in scorers]
            rows.append([method, label, *[_cell(float(v[0])) if len(v) else "–" for v in vals]])
        head = "".join(f"<th>{html.escape(h)}</th>" for h in ["method", "label", *scorers])
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
        left.append(f'<table class="table labels"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    else:
        left.append(_note("No labels for this feature."))
    fig = activation_histogram(run, feature)
    right = page.figure(fig, height=260) if fig is not None else _note("Never fires on the train split.")
    parts.append(
        f'<div class="card-body"><div class="card-left">{"".join(left)}</div>'
        f'<div class="card-right">{right}</div></div>'
    )
    mine = windows.feature == feature
    if not mine.any():
        parts.append(_note("No example window: the feature does not fire in the windows sampled."))
    for kind, title in (("top", "Top activations"), ("quantile", "Across activation quantiles")):
        idx = np.flatnonzero(mine & (windows.kind == kind))
        if len(idx) == 0:
            continue
        shown = "".join(
            f'<div class="window"><span class="act">{windows.activation[i]:.3g}</span>'
            '<span class="text">'
            + window_html(run.vocab, windows.token_ids[i], windows.acts[i], fmax, joiner)
            + "</span></div>"
            for i in idx
        )
        parts.append(f"<h4>{title}</h4>{shown}")
    parts.append("</section>")
    return "".join(parts)


def cards_section(
    page: Page, run: RunStore, features: np.ndarray, tables: LabelTables | None, cfg: ReportConfig
) -> str:
    if len(features) == 0:
        return _note("No feature cards: the run has no alive feature, or --max-cards is 0.")
    windows, source = card_windows(run, features, tables, cfg)
    joiner = joiner_for(run.vocab)
    which = (
        "the features named"
        if cfg.features
        else f"{len(features)} alive features spread from densest to rarest (name others with --feature)"
    )
    parts = [
        f"<p>Cards for {which}. {html.escape(source)} Shading: activation relative to the "
        "feature's maximum; hover a token for its value.</p>",
        '<input id="card-filter" type="search" placeholder="filter cards by feature number or label">',
        '<p class="index">' + " ".join(f'<a href="#feature-{f}">{f}</a>' for f in features.tolist()) + "</p>",
    ]
    parts.extend(card_html(page, run, int(f), tables, windows, joiner) for f in features.tolist())
    return "".join(parts)


# ------------------------------------------------------------------ the page
