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
from typing import Any

import numpy as np

from sae_translate.errors import UserError
from sae_translate.label import LabelConfig, LabelResult, label_run
from sae_translate.label.describe import rule_evaluator
from sae_translate.label.examples import HeldoutSlice, heldout_seqs_for
from sae_translate.label.rules import Rule, RuleEvaluator, TokenView
from sae_translate.score.embedder import TextEmbedder, exact_backend, resolve_backend
from sae_translate.score.embedding import embedding_scores
from sae_translate.score.ground_truth import (
    PlantedConcepts,
    concept_membership,
    concept_phrases,
    f1,
    name_match,
    planted_concepts,
)
from sae_translate.score.simulation import (
    detection_scores,
    rule_matches,
    simulation_scores,
    token_matches,
)
from sae_translate.score.windows import load_scoring_set
from sae_translate.store import db as label_db
from sae_translate.store.h5 import RunStore
from sae_translate.world.build import load_world

SCORERS = ("embedding", "detection", "simulation", "ground_truth", "name_match")


@dataclass
class ScoreConfig:
    run: str
    db: str = str(label_db.DEFAULT_DB)
    scorers: tuple[str, ...] = SCORERS
    methods: tuple[str, ...] | None = None  # None: every method labelled for the run
    run_id: str | None = None  # defaults to the run directory's name
    device: str = "auto"
    min_concept_precision: float = 0.5
    min_concept_firings: int = 5
    max_heldout_tokens: int = 262_144  # held-out tokens used to find true concepts
    world: str = ""  # toy-world dir for ground truth; "" = the run's own


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


@dataclass(frozen=True)
class StoredLabel:
    text: str
    rule: Rule | None


def _read_stage_inputs(cfg: ScoreConfig, run_id: str) -> tuple[dict[str, dict[int, StoredLabel]], dict]:
    con = label_db.connect_readonly(cfg.db)
    try:
        labels = con.execute(
            "SELECT method, feature, label, rule FROM labels WHERE run_id = ? AND rank = 0 ORDER BY method, feature",
            [run_id],
        ).fetchall()
        ex = con.execute(
            "SELECT feature, kind, seq, start, stop FROM examples WHERE run_id = ? AND kind IN ('quantile', 'random')",
            [run_id],
        ).fetchnumpy()
    finally:
        con.close()
    by_method: dict[str, dict[int, StoredLabel]] = {}
    for method, feature, label, rule in labels:
        by_method.setdefault(method, {})[feature] = StoredLabel(label, Rule.from_json(rule) if rule else None)
    if not by_method:
        raise UserError(f"no labels for run {run_id!r} in {cfg.db}; run `sae-translate label --run {cfg.run}` first")
    rows = {k: np.asarray(v) for k, v in ex.items()}
    return by_method, rows


def _summary(method: str, scorer: str, values: np.ndarray, n_labelled: int) -> ScoreSummary:
    ok = np.isfinite(values)
    mean = float(values[ok].mean()) if ok.any() else None
    return ScoreSummary(method, scorer, mean, int(ok.sum()), n_labelled - int(ok.sum()))


@dataclass
class GroundTruth:
    """A toy world's tags of the held-out slice and each judged feature's planted concept."""

    world: Any
    member: np.ndarray  # bool [slice tokens, concepts]
    planted: PlantedConcepts
    column: dict[str, int]


def check_scorers(scorers: tuple[str, ...], world: str) -> None:
    """Fail on an unknown scorer, or on a --world that is not a toy world when a scorer needs one,
    before anything is read or written."""
    unknown = set(scorers) - set(SCORERS)
    if unknown:
        raise UserError(f"unknown scorer {sorted(unknown)[0]!r}; choose from {', '.join(SCORERS)}")
    if world and set(scorers) & {"ground_truth", "name_match"}:
        load_world(world)


def score_run(cfg: ScoreConfig) -> ScoreResult:
    """Score every method's labels of a run on held-out windows; store scores and summaries."""
    t0 = time.perf_counter()
    check_scorers(tuple(cfg.scorers), cfg.world)
    with RunStore.open(cfg.run) as run:
        return _score(run, cfg, t0)


def _score(run: RunStore, cfg: ScoreConfig, t0: float) -> ScoreResult:
    run_id = cfg.run_id or run.dir.name
    by_method, rows = _read_stage_inputs(cfg, run_id)
    methods = [m for m in (cfg.methods or sorted(by_method)) if m in by_method]
    if cfg.methods and len(methods) < len(cfg.methods):
        missing = sorted(set(cfg.methods) - set(methods))
        raise UserError(f"run {run_id!r} has no labels from {', '.join(missing)}; label it first")
    scorers = set(cfg.scorers)

    world = None
    world_dir = cfg.world or str(run.attrs.get("world", "") or "")
    if scorers & {"ground_truth", "name_match"} and world_dir:
        world = load_world(world_dir)
    gt_seqs = heldout_seqs_for(run, cfg.max_heldout_tokens) if world is not None else np.zeros(0, np.int64)
    data = HeldoutSlice.load(run, np.union1d(rows["seq"].astype(np.int64), gt_seqs))
    sset = load_scoring_set(run, data, rows)
    needs_rules = bool(scorers & {"detection", "simulation"}) or world is not None
    evaluator = rule_evaluator(run.vocab)[0] if needs_rules else None
    view = evaluator.view(data.tokens) if evaluator is not None else None
    embeddings = TextEmbedder(cfg.device, cache_dir=run.dir / "embeddings") if "embedding" in scorers else None
    # name match is an argmax over the concepts' phrases, a few hundred texts: embedded exactly (by
    # the same embedder where the chosen one is exact already)
    name_embeddings = None
    if "name_match" in scorers:
        exact = exact_backend()
        reuse = embeddings is not None and embeddings.resolved == resolve_backend(embeddings.device, exact)
        name_embeddings = embeddings if reuse else TextEmbedder(cfg.device, run.dir / "embeddings", exact)
    window_emb = None
    if "embedding" in scorers and embeddings is not None:
        embeddings.add([by_method[m][int(f)].text for m in methods for f in sset.features if int(f) in by_method[m]])
        window_emb = embeddings(sset.window_texts)
    truth = None
    if world is not None:
        names = list(world.config.concept_names)
        member = concept_membership(data, run.vocab, names, world.tag_words)
        labelled = np.array(sorted({f for m in methods for f in by_method[m]}), dtype=np.int64)
        planted = planted_concepts(data, member, names, labelled, cfg.min_concept_precision, cfg.min_concept_firings)
        truth = GroundTruth(world, member, planted, {n: i for i, n in enumerate(names)})

    score_cols: dict[str, list] = {"feature": [], "method": [], "scorer": [], "value": []}
    summary: list[ScoreSummary] = []

    def add(method: str, scorer: str, features: np.ndarray, values: np.ndarray, n_labelled: int) -> None:
        ok = np.isfinite(values)
        score_cols["feature"].extend(features[ok].tolist())
        score_cols["method"].extend([method] * int(ok.sum()))
        score_cols["scorer"].extend([scorer] * int(ok.sum()))
        score_cols["value"].extend(values[ok].astype(float).tolist())
        summary.append(_summary(method, scorer, values, n_labelled))

    no_label = StoredLabel("", None)
    for method in methods:
        labels = by_method[method]
        n_labelled = len(labels)
        stored = [labels.get(int(f), no_label) for f in sset.features]
        texts = [x.text for x in stored]
        if scorers & {"detection", "simulation"}:
            assert evaluator is not None and view is not None
            matches = rule_matches([x.rule for x in stored], texts, evaluator, view, sset.cells, run.vocab)
            if "detection" in scorers:
                add(
                    method,
                    "detection",
                    sset.features,
                    detection_scores(matches, sset.activating, sset.valid),
                    n_labelled,
                )
            if "simulation" in scorers:
                token_valid = (sset.tokens >= 0) & sset.valid[:, :, None]
                add(method, "simulation", sset.features, simulation_scores(matches, sset.acts, token_valid), n_labelled)
        if "embedding" in scorers and embeddings is not None and window_emb is not None:
            add(method, "embedding", sset.features, embedding_scores(embeddings(texts), sset, window_emb), n_labelled)
        if truth is not None:
            concept_of = {f: c for f, c in truth.planted.planted().items() if f in labels}
            feats = np.array(sorted(concept_of), dtype=np.int64)
            if "ground_truth" in scorers:
                assert evaluator is not None and view is not None
                values = extensional_f1(
                    [labels[f] for f in feats.tolist()],
                    [truth.column[concept_of[f]] for f in feats.tolist()],
                    truth.member,
                    evaluator,
                    view,
                    run.vocab,
                )
                add(method, "ground_truth", feats, values, n_labelled)
            if "name_match" in scorers and name_embeddings is not None:
                phrases, owner = concept_phrases(truth.world.config.concepts)
                values = name_match(
                    name_embeddings([labels[f].text for f in feats.tolist()]),
                    name_embeddings(phrases),
                    owner,
                    np.array([truth.column[concept_of[f]] for f in feats.tolist()], dtype=np.int64),
                )
                add(method, "name_match", feats, values, n_labelled)

    concept_rows = None
    if truth is not None:
        kinds = {c.name: c.kind for c in truth.world.config.concepts}
        p = truth.planted
        concept_rows = {
            "feature": p.feature.astype(np.int32),
            "concept": p.concept,
            "kind": [kinds.get(c, "") for c in p.concept],
            "status": p.status,
            "precision": p.precision,
            "n_firing": p.n_firing,
            "firing_f1": p.firing_f1,
        }
    summary_rows = {
        "method": [s.method for s in summary],
        "scorer": [s.scorer for s in summary],
        "mean": [s.mean for s in summary],
        "n_scored": [s.n_scored for s in summary],
        "n_excluded": [s.n_excluded for s in summary],
    }
    score_table = {
        "feature": np.array(score_cols["feature"], dtype=np.int32),
        "method": score_cols["method"],
        "scorer": score_cols["scorer"],
        "value": np.array(score_cols["value"], dtype=np.float64),
    }
    label_db.write_score_stage(
        cfg.db,
        run_id,
        label_db.ScoreStageRows(
            scores=score_table,
            summary=summary_rows,
            true_concepts=concept_rows,
            methods=methods,
            scorers=list(cfg.scorers),
        ),
    )
    return ScoreResult(
        run_id, summary, len(score_cols["feature"]), time.perf_counter() - t0, world_dir if world is not None else ""
    )


def extensional_f1(
    labels: list[StoredLabel],
    concepts: list[int],
    member: np.ndarray,
    evaluator: RuleEvaluator,
    view: TokenView,
    vocab: list[str],
) -> np.ndarray:
    """F1 of each label's selection over the whole held-out slice against its concept's tokens."""
    cache: dict[str, np.ndarray] = {}
    out = np.zeros(len(labels))
    for i, (label, c) in enumerate(zip(labels, concepts)):
        key = label.rule.to_json() if label.rule is not None else "text:" + label.text
        if key not in cache:
            if label.rule is not None:
                cache[key] = evaluator.select(label.rule, view).reshape(-1)
            else:
                cache[key] = token_matches([label.text], vocab, view.tokens[None])[0].reshape(-1)
        out[i] = f1(cache[key], member[:, c])
    return out


def label_and_score(cfg: LabelConfig) -> tuple[LabelResult, ScoreResult | None]:
    """The label stage as the CLI and pipelines run it: label, then score the new labels."""
    check_scorers(tuple(cfg.scorers), cfg.world)  # a bad scorer or world fails before the labels replace old ones
    labelled = label_run(cfg)
    if not cfg.scorers:
        return labelled, None
    scored = score_run(
        ScoreConfig(
            run=cfg.run,
            db=cfg.db,
            scorers=tuple(cfg.scorers),
            methods=labelled.methods,
            run_id=labelled.run_id,
            device=cfg.device,
            max_heldout_tokens=cfg.max_heldout_tokens,
            world=cfg.world,
        )
    )
    return labelled, scored


def summary_table(summary: list[ScoreSummary]) -> str:
    """Per method (rows), the mean of each scorer (columns); n/a where not scored."""
    methods = list(dict.fromkeys(s.method for s in summary))
    scorers = [s for s in SCORERS if any(x.scorer == s for x in summary)]
    means = {(s.method, s.scorer): s.mean for s in summary}
    width = max([len("method")] + [len(m) for m in methods])
    lines = ["  ".join(["method".ljust(width)] + [s.rjust(12) for s in scorers])]
    for m in methods:
        cells = [("n/a" if means.get((m, s)) is None else f"{means[m, s]:.3f}").rjust(12) for s in scorers]
        lines.append("  ".join([m.ljust(width)] + cells))
    return "\n".join(lines)


def concept_kind_table(db: str | Path, run_id: str) -> str:
    """Ground truth, name match and embedding AUROC per method over the features with a planted
    concept: all of them, then split by the concept's kind (lexical: token identity suffices;
    contextual: it does not)."""
    con = label_db.connect_readonly(db)
    try:
        rows = con.execute(
            "SELECT s.method, t.kind, s.scorer, avg(s.value), count(*) FROM scores s JOIN true_concepts t "
            "ON s.run_id = t.run_id AND s.feature = t.feature AND t.status = 'planted' "
            "WHERE s.run_id = ? AND s.scorer IN ('ground_truth', 'name_match', 'embedding') "
            "GROUP BY ALL UNION ALL "
            "SELECT s.method, 'all', s.scorer, avg(s.value), count(*) FROM scores s JOIN true_concepts t "
            "ON s.run_id = t.run_id AND s.feature = t.feature AND t.status = 'planted' "
            "WHERE s.run_id = ? AND s.scorer IN ('ground_truth', 'name_match', 'embedding') GROUP BY ALL",
            [run_id, run_id],
        ).fetchall()
        status = dict(
            con.execute("SELECT status, count(*) FROM true_concepts WHERE run_id = ? GROUP BY ALL", [run_id]).fetchall()
        )
        firing = con.execute(
            "SELECT kind, avg(firing_f1) FROM true_concepts WHERE run_id = ? AND status = 'planted' GROUP BY ALL "
            "UNION ALL SELECT 'all', avg(firing_f1) FROM true_concepts WHERE run_id = ? AND status = 'planted'",
            [run_id, run_id],
        ).fetchall()
    finally:
        con.close()
    cells = {(m, k, sc): (v, n) for m, k, sc, v, n in rows}
    methods = list(dict.fromkeys(m for m, *_ in sorted(rows)))
    short = {"ground_truth": "gt", "name_match": "name", "embedding": "emb"}
    columns = [(k, sc) for k in ("all", "lexical", "contextual") for sc in ("ground_truth", "name_match", "embedding")]
    width = max([len("method")] + [len(m) for m in methods])
    n = {
        k: max([cells.get((m, k, "ground_truth"), (0, 0))[1] for m in methods], default=0)
        for k in ("all", "lexical", "contextual")
    }
    lines = [
        f"   features with a planted concept: {n['all']} ({n['lexical']} lexical, {n['contextual']} contextual); "
        f"{status.get('tie', 0)} tied between concepts and {status.get('split', 0)} split across concepts "
        "are not scored",
        "  ".join(["method".ljust(width)] + [f"{k[:4]} {short[sc]}".rjust(9) for k, sc in columns]),
    ]
    for m in methods:
        vals = [cells.get((m, k, sc)) for k, sc in columns]
        lines.append("  ".join([m.ljust(width)] + [("n/a" if v is None else f"{v[0]:.3f}").rjust(9) for v in vals]))
    bound = {k: v for k, v in firing if v is not None}
    if bound:
        vals = [bound.get(k) if sc == "ground_truth" else None for k, sc in columns]
        lines.append("  ".join([FIRING.ljust(width)] + [("" if v is None else f"{v:.3f}").rjust(9) for v in vals]))
        lines.append(
            f"   {FIRING}: F1 of each feature's own held-out firing against its concept, the ground truth of a "
            "label stating exactly what the feature does (below 1 where the SAE splits a concept)"
        )
    return "\n".join(lines)


FIRING = "(feature's firing)"


def concept_recovery_table(db: str | Path, run_id: str) -> str:
    """Per planted concept, the best ground truth among the features it is planted in, averaged over
    concepts: did some feature's label name the concept? An SAE that splits a concept over many
    features (one per verb, say) gives each a narrow, faithful label; the concept is recovered
    when one of them names it."""
    con = label_db.connect_readonly(db)
    try:
        rows = con.execute(
            "WITH best AS (SELECT s.method, t.concept, t.kind, max(s.value) AS v FROM scores s JOIN true_concepts t "
            "ON s.run_id = t.run_id AND s.feature = t.feature AND t.status = 'planted' "
            "WHERE s.run_id = ? AND s.scorer = 'ground_truth' GROUP BY ALL), "
            "bound AS (SELECT ? AS method, concept, kind, max(firing_f1) AS v FROM true_concepts "
            "WHERE run_id = ? AND status = 'planted' AND firing_f1 IS NOT NULL GROUP BY ALL), "
            "per_concept AS (SELECT * FROM best UNION ALL SELECT * FROM bound) "
            "SELECT method, kind, avg(v), count(*) FROM per_concept GROUP BY ALL "
            "UNION ALL SELECT method, 'all', avg(v), count(*) FROM per_concept GROUP BY ALL",
            [run_id, FIRING, run_id],
        ).fetchall()
    finally:
        con.close()
    cells = {(m, k): (v, n) for m, k, v, n in rows}
    methods = sorted({m for m, *_ in rows if m != FIRING}) + ([FIRING] if any(m == FIRING for m, *_ in rows) else [])
    kinds = ("all", "lexical", "contextual")
    n = {k: max([cells.get((m, k), (0, 0))[1] for m in methods], default=0) for k in kinds}
    width = max([len("method")] + [len(m) for m in methods])
    lines = [
        f"   planted concepts: {n['all']} ({n['lexical']} lexical, {n['contextual']} contextual); per concept the "
        "best ground truth among its features",
        "  ".join(["method".ljust(width)] + [f"{k[:4]} gt".rjust(9) for k in kinds]),
    ]
    for m in methods:
        vals = [cells.get((m, k)) for k in kinds]
        lines.append("  ".join([m.ljust(width)] + [("n/a" if v is None else f"{v[0]:.3f}").rjust(9) for v in vals]))
    return "\n".join(lines)
