"""The score stage: every method's labels of a run graded on held-out example windows.

The windows are the ones the label stage sampled and stored in ``examples``: per feature,
activating windows across activation quantiles (kind ``quantile``) and as many random windows
where the feature is silent (kind ``random``). Scorers: ``embedding`` (embedding.py),
``detection`` and ``simulation`` (simulation.py), ``ground_truth`` (ground_truth.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sae_translate.errors import UserError
from sae_translate.label import LabelConfig, LabelResult, label_run
from sae_translate.label.examples import HeldoutSlice, heldout_seqs_for
from sae_translate.score.embedding import EmbeddingCache, embedding_scores
from sae_translate.score.ground_truth import names_concept, true_concepts
from sae_translate.score.simulation import (
    detection_scores,
    simulation_scores,
    token_matches,
)
from sae_translate.score.windows import load_scoring_set
from sae_translate.store import db as label_db
from sae_translate.store.h5 import RunStore
from sae_translate.world.build import load_world

SCORERS = ("embedding", "detection", "simulation", "ground_truth")


@dataclass
class ScoreConfig:
    run: str
    db: str = str(label_db.DEFAULT_DB)
    scorers: tuple[str, ...] = SCORERS
    methods: tuple[str, ...] | None = None   # None: every method labelled for the run
    run_id: str | None = None                # defaults to the run directory's name
    device: str = "auto"
    batch_size: int = 256                    # texts per embedding batch
    min_concept_precision: float = 0.5
    min_concept_firings: int = 5
    max_heldout_tokens: int = 262_144        # held-out tokens used to find true concepts
    world: str = ""                          # toy-world dir for ground truth; "" = the run's own


@dataclass
class ScoreSummary:
    method: str
    scorer: str
    mean: float | None
    n_scored: int
    n_excluded: int


@dataclass
class ScoreResult:
    run_id: str
    summary: list[ScoreSummary]
    n_scores: int
    seconds: float
    world: str = ""  # the toy world ground truth came from ("" when not scored against one)



def _read_stage_inputs(cfg: ScoreConfig, run_id: str) -> tuple[dict[str, dict[int, str]], dict]:
    con = label_db.connect_readonly(cfg.db)
    try:
        labels = con.execute(
            "SELECT method, feature, label FROM labels WHERE run_id = ? AND rank = 0 "
            "ORDER BY method, feature", [run_id]).fetchall()
        ex = con.execute(
            "SELECT feature, kind, seq, start, stop FROM examples "
            "WHERE run_id = ? AND kind IN ('quantile', 'random')", [run_id]).fetchnumpy()
    finally:
        con.close()
    by_method: dict[str, dict[int, str]] = {}
    for method, feature, label in labels:
        by_method.setdefault(method, {})[feature] = label
    if not by_method:
        raise UserError(f"no labels for run {run_id!r} in {cfg.db}; run "
                        f"`sae-translate label --run {cfg.run}` first")
    rows = {k: np.asarray(v) for k, v in ex.items()}
    return by_method, rows


def _summary(method: str, scorer: str, values: np.ndarray, n_labelled: int) -> ScoreSummary:
    ok = np.isfinite(values)
    mean = float(values[ok].mean()) if ok.any() else None
    return ScoreSummary(method, scorer, mean, int(ok.sum()), n_labelled - int(ok.sum()))


def score_run(cfg: ScoreConfig) -> ScoreResult:
    """Score every method's labels of a run on held-out windows; store scores and summaries."""
    t0 = time.perf_counter()
    unknown = set(cfg.scorers) - set(SCORERS)
    if unknown:
        raise UserError(f"unknown scorer {sorted(unknown)[0]!r}; choose from {', '.join(SCORERS)}")
    run = RunStore.open(cfg.run)
    run_id = cfg.run_id or run.dir.name
    by_method, rows = _read_stage_inputs(cfg, run_id)
    methods = [m for m in (cfg.methods or sorted(by_method)) if m in by_method]
    if cfg.methods and len(methods) < len(cfg.methods):
        missing = sorted(set(cfg.methods) - set(methods))
        raise UserError(f"run {run_id!r} has no labels from {', '.join(missing)}; label it first")

    world = None
    world_dir = cfg.world or str(run.attrs.get("world", "") or "")
    if "ground_truth" in cfg.scorers and world_dir:
        world = load_world(world_dir)
    gt_seqs = heldout_seqs_for(run, cfg.max_heldout_tokens) if world is not None else np.zeros(0, np.int64)
    data = HeldoutSlice.load(run, np.union1d(rows["seq"].astype(np.int64), gt_seqs))
    sset = load_scoring_set(run, data, rows)
    window_emb, embeddings = None, None
    if "embedding" in cfg.scorers:
        embeddings = EmbeddingCache(cfg.device, cfg.batch_size)
        embeddings.add([by_method[m].get(int(f), "") for m in methods for f in sset.features])
        window_emb = embeddings(sset.window_texts)
    concepts = None
    if world is not None:
        labelled = np.array(sorted({f for m in methods for f in by_method[m]}), dtype=np.int64)
        concepts = true_concepts(data, run.vocab, world.config.concept_names, world.tag_words,
                                 labelled, cfg.min_concept_precision, cfg.min_concept_firings)

    score_cols: dict[str, list] = {"feature": [], "method": [], "scorer": [], "value": []}
    summary: list[ScoreSummary] = []

    def add(method: str, scorer: str, features: np.ndarray, values: np.ndarray, n_labelled: int) -> None:
        ok = np.isfinite(values)
        score_cols["feature"].extend(features[ok].tolist())
        score_cols["method"].extend([method] * int(ok.sum()))
        score_cols["scorer"].extend([scorer] * int(ok.sum()))
        score_cols["value"].extend(values[ok].astype(float).tolist())
        summary.append(_summary(method, scorer, values, n_labelled))

    for method in methods:
        labels = by_method[method]
        n_labelled = len(labels)
        texts = [labels.get(int(f), "") for f in sset.features]
        if {"detection", "simulation"} & set(cfg.scorers):
            matches = token_matches(texts, run.vocab, sset.tokens)
            if "detection" in cfg.scorers:
                add(method, "detection", sset.features,
                    detection_scores(matches, sset.activating, sset.valid), n_labelled)
            if "simulation" in cfg.scorers:
                token_valid = (sset.tokens >= 0) & sset.valid[:, :, None]
                add(method, "simulation", sset.features,
                    simulation_scores(matches, sset.acts, token_valid), n_labelled)
        if embeddings is not None:
            add(method, "embedding", sset.features,
                embedding_scores(embeddings(texts), sset, window_emb), n_labelled)
        if concepts is not None:
            by_feature = dict(zip(concepts.feature.tolist(), concepts.concept))
            feats = np.array([f for f in concepts.feature.tolist() if f in labels], dtype=np.int64)
            values = np.array([float(names_concept(labels[f], world.config.concept(by_feature[f])))
                               for f in feats.tolist()])
            add(method, "ground_truth", feats, values, n_labelled)

    concept_rows = None
    if concepts is not None:
        concept_rows = {"feature": concepts.feature.astype(np.int32), "concept": concepts.concept,
                        "precision": concepts.precision, "n_firing": concepts.n_firing}
    summary_rows = {"method": [s.method for s in summary], "scorer": [s.scorer for s in summary],
                    "mean": [s.mean for s in summary], "n_scored": [s.n_scored for s in summary],
                    "n_excluded": [s.n_excluded for s in summary]}
    score_table = {"feature": np.array(score_cols["feature"], dtype=np.int32),
                   "method": score_cols["method"], "scorer": score_cols["scorer"],
                   "value": np.array(score_cols["value"], dtype=np.float64)}
    label_db.write_score_stage(cfg.db, run_id, label_db.ScoreStageRows(
        scores=score_table, summary=summary_rows, true_concepts=concept_rows, methods=methods,
        scorers=list(cfg.scorers)))
    return ScoreResult(run_id, summary, len(score_cols["feature"]), time.perf_counter() - t0,
                       world_dir if world is not None else "")


def label_and_score(cfg: LabelConfig) -> tuple[LabelResult, ScoreResult | None]:
    """The label stage as the CLI and pipelines run it: label, then score the new labels."""
    labelled = label_run(cfg)
    if not cfg.scorers:
        return labelled, None
    scored = score_run(ScoreConfig(run=cfg.run, db=cfg.db, scorers=tuple(cfg.scorers),
                                   methods=labelled.methods, run_id=labelled.run_id,
                                   device=cfg.device, max_heldout_tokens=cfg.max_heldout_tokens,
                                   world=cfg.world))
    return labelled, scored


def summary_table(summary: list[ScoreSummary]) -> str:
    """Per method (rows), the mean of each scorer (columns); n/a where not scored."""
    methods = list(dict.fromkeys(s.method for s in summary))
    scorers = [s for s in SCORERS if any(x.scorer == s for x in summary)]
    means = {(s.method, s.scorer): s.mean for s in summary}
    width = max([len("method")] + [len(m) for m in methods])
    lines = ["  ".join(["method".ljust(width)] + [s.rjust(12) for s in scorers])]
    for m in methods:
        cells = [("n/a" if means.get((m, s)) is None else f"{means[m, s]:.3f}").rjust(12)
                 for s in scorers]
        lines.append("  ".join([m.ljust(width)] + cells))
    return "\n".join(lines)


def concept_kind_table(db: str | Path, run_id: str, world_dir: str) -> str:
    """Ground truth and embedding AUROC per method, split by the kind of the features' true
    concepts (lexical: token identity suffices; contextual: it does not)."""
    kinds = {c.name: c.kind for c in load_world(world_dir).config.concepts}
    con = label_db.connect_readonly(db)
    try:
        rows = con.execute(
            "SELECT s.method, t.concept, s.scorer, s.value FROM scores s JOIN true_concepts t "
            "ON s.run_id = t.run_id AND s.feature = t.feature "
            "WHERE s.run_id = ? AND s.scorer IN ('ground_truth', 'embedding')", [run_id]).fetchall()
    finally:
        con.close()
    cells: dict[tuple[str, str, str], list[float]] = {}
    for method, concept, scorer, value in rows:
        cells.setdefault((method, kinds.get(concept, "lexical"), scorer), []).append(value)
    methods = list(dict.fromkeys(m for m, *_ in sorted(rows)))
    columns = [(k, sc) for k in ("lexical", "contextual") for sc in ("ground_truth", "embedding")]
    width = max([len("method")] + [len(m) for m in methods])
    head = ["method".ljust(width)] + [f"{k[:4]} {'gt' if sc == 'ground_truth' else 'emb'}".rjust(10)
                                      for k, sc in columns]
    n = {k: max([len(cells.get((m, k, "ground_truth"), [])) for m in methods], default=0)
         for k in ("lexical", "contextual")}
    lines = [f"   by concept kind ({n['lexical']} lexical, {n['contextual']} contextual features)",
             "  ".join(head)]
    for m in methods:
        vals = [cells.get((m, k, sc)) for k, sc in columns]
        lines.append("  ".join([m.ljust(width)] + [("n/a" if not v else f"{np.mean(v):.3f}").rjust(10) for v in vals]))
    return "\n".join(lines)

