"""Label generation: one or more text labels per alive feature from each method.

Methods live in a registry (``LABELERS``); each takes a ``LabelContext`` and returns, for every
alive feature in order, a ranked list of candidate labels (rank 0 is the one scored). Baselines:

- ``top-tokens``: the most frequent tokens among the feature's top train activations;
- ``logit-lens``: the top tokens of the feature's decoder direction through the unembedding;
- ``random``: another feature's ``top-tokens`` label (a derangement), the floor.

The ``translator`` method registers itself from ``sae_translate.translator`` (imported on
first use). Labels come from the train split only; the example windows written beside them come
from the held-out split (see ``examples.py``).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from sae_translate.errors import UserError
from sae_translate.examples import (KINDS, ExampleConfig, ExampleSet, HeldoutSlice,
                                    heldout_seqs_for, render_windows, sample_examples, token_text)
from sae_translate.store import db as label_db
from sae_translate.store.h5 import RunStore

BASELINES = ("top-tokens", "logit-lens", "random")


@dataclass
class LabelConfig:
    run: str
    db: str = str(label_db.DEFAULT_DB)
    methods: tuple[str, ...] = BASELINES
    run_id: str | None = None          # defaults to the run directory's name
    label_tokens: int = 3              # tokens named by a baseline label
    window: int = 16                   # tokens per example window
    n_top_examples: int = 5
    n_quantiles: int = 5
    n_per_quantile: int = 2
    max_heldout_tokens: int = 262_144
    seed: int = 0
    device: str = "auto"
    # scorers run right after labelling by score.label_and_score (empty: label only)
    scorers: tuple[str, ...] = ("embedding", "detection", "simulation", "ground_truth")
    world: str = ""                    # toy-world dir for ground truth; "" = the run's own

    @property
    def example_config(self) -> ExampleConfig:
        return ExampleConfig(window=self.window, n_top=self.n_top_examples,
                             n_quantiles=self.n_quantiles, n_per_quantile=self.n_per_quantile,
                             max_heldout_tokens=self.max_heldout_tokens, seed=self.seed)


@dataclass
class LabelResult:
    run_id: str
    db: str
    methods: tuple[str, ...]
    n_features: int                    # alive features labelled
    n_labels: int
    n_examples: int
    seconds: float


@dataclass
class LabelContext:
    """What a labeller may use. ``labels`` holds methods already computed in this call."""

    run: RunStore
    features: np.ndarray               # int64 alive features, ascending
    cfg: LabelConfig
    rng: np.random.Generator
    labels: dict[str, list[list[str]]] = field(default_factory=dict)


Labeler = Callable[[LabelContext], list[list[str]]]
LABELERS: dict[str, Labeler] = {}
# Methods whose labeller lives in another module, imported on first use.
LAZY_LABELERS: dict[str, str] = {"translator": "sae_translate.translator"}


def register_labeler(name: str) -> Callable[[Labeler], Labeler]:
    """Decorator: make ``fn(ctx) -> candidates per feature`` available as method ``name``."""
    def add(fn: Labeler) -> Labeler:
        LABELERS[name] = fn
        return fn
    return add


def get_labeler(name: str) -> Labeler:
    if name not in LABELERS and name in LAZY_LABELERS:
        importlib.import_module(LAZY_LABELERS[name])
    if name not in LABELERS:
        known = sorted(set(LABELERS) | set(LAZY_LABELERS))
        raise UserError(f"unknown label method {name!r}; choose from {', '.join(known)}")
    return LABELERS[name]


def join_tokens(tokens: list[str]) -> str:
    """Baseline labels list their tokens separated by ', ' (parsed back by the scorers)."""
    seen: list[str] = []
    for t in tokens:
        text = token_text(t)
        if text not in seen:
            seen.append(text)
    return ", ".join(seen)


def gather_tokens(run: RunStore, positions: np.ndarray, block_seqs: int = 4096) -> np.ndarray:
    """Token ids at global positions (seq * ctx + pos), reading contiguous blocks of sequences."""
    positions = np.asarray(positions, dtype=np.int64)
    out = np.full(positions.shape, -1, dtype=np.int32)
    flat_pos, flat_out = positions.reshape(-1), out.reshape(-1)
    valid = np.flatnonzero(flat_pos >= 0)
    if len(valid) == 0:
        return out
    seq = flat_pos[valid] // run.ctx
    order = np.argsort(seq, kind="stable")
    valid, seq = valid[order], seq[order]
    for lo in range(int(seq[0]), int(seq[-1]) + 1, block_seqs):
        a, b = np.searchsorted(seq, [lo, lo + block_seqs])
        if a == b:
            continue
        hi = int(seq[b - 1]) + 1
        block = np.asarray(run.tokens(slice(lo, hi)), dtype=np.int32).reshape(-1)
        flat_out[valid[a:b]] = block[flat_pos[valid[a:b]] - lo * run.ctx]
    return out


@register_labeler("top-tokens")
def top_tokens_labels(ctx: LabelContext) -> list[list[str]]:
    """Most frequent tokens among each feature's top train activations (ties: by summed activation).

    The first token is always named; later ones only if they occur at least twice, so one-off
    tokens do not dilute the label.
    """
    run, feats = ctx.run, ctx.features
    tokens = gather_tokens(run, run.top_positions[feats])
    values = np.asarray(run.top_values[feats], dtype=np.float64)
    row, col = np.nonzero(tokens >= 0)
    key = row.astype(np.int64) * len(run.vocab) + tokens[row, col]
    uniq, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    act_sum = np.bincount(inverse, weights=values[row, col], minlength=len(uniq))
    urow, utok = uniq // len(run.vocab), uniq % len(run.vocab)
    order = np.lexsort((-act_sum, -counts, urow))
    urow, utok, counts = urow[order], utok[order], counts[order]
    rank = np.arange(len(urow)) - np.searchsorted(urow, urow, side="left")
    keep = (rank < ctx.cfg.label_tokens) & ((rank == 0) | (counts >= 2))
    per_feature: list[list[str]] = [[] for _ in range(len(feats))]
    vocab = run.vocab
    for r, t in zip(urow[keep].tolist(), utok[keep].tolist()):
        per_feature[r].append(vocab[t])
    return [[join_tokens(toks)] if toks else [""] for toks in per_feature]


@register_labeler("logit-lens")
def logit_lens_labels(ctx: LabelContext) -> list[list[str]]:
    """Top tokens of W_dec[f] @ W_U, as stored in the run."""
    lens = ctx.run.logit_lens_tokens
    if lens is None:
        raise UserError(f"{ctx.run.path} has no logit-lens tokens; drop logit-lens from --methods "
                        "or re-extract the run")
    vocab = ctx.run.vocab
    rows = np.asarray(lens[ctx.features, :ctx.cfg.label_tokens]).tolist()
    return [[join_tokens([vocab[t] for t in row if 0 <= t < len(vocab)])] for row in rows]


@register_labeler("random")
def random_labels(ctx: LabelContext) -> list[list[str]]:
    """Each feature gets another feature's top-tokens label (a random derangement)."""
    source = ctx.labels.get("top-tokens") or top_tokens_labels(ctx)
    n = len(source)
    perm = ctx.rng.permutation(n)
    out: list[list[str]] = [[""] for _ in range(n)]
    for i in range(n):  # a cycle through perm: nobody keeps its own label when n > 1
        out[perm[i]] = source[perm[(i + 1) % n]][:1]
    return out


def _run_row(run: RunStore) -> dict:
    a = run.attrs
    return {"path": str(run.dir.resolve()), "model": str(a.get("model", "")),
            "hook": str(a.get("hook", "")), "sae": str(a.get("sae", "")),
            "dataset": str(a.get("dataset", "")), "d_sae": run.d_sae, "n_tokens": run.n_tokens,
            "world": str(a.get("world", "") or ""),
            "created_at": datetime.now(timezone.utc).replace(tzinfo=None),
            "config": str(a.get("config", "{}"))}


def _feature_rows(run: RunStore, heldout_windows: np.ndarray) -> dict[str, np.ndarray]:
    stats = run.stats
    return {"feature": np.arange(run.d_sae, dtype=np.int32), "alive": stats.count > 0,
            "count": stats.count.astype(np.int64), "frequency": stats.frequency.astype(np.float64),
            "max_activation": stats.max.astype(np.float32),
            "mean_activation": stats.mean.astype(np.float32), "heldout_windows": heldout_windows}


def example_rows(run: RunStore, data: HeldoutSlice, ex: ExampleSet, window: int) -> dict:
    """Example windows as table rows, text with firing tokens marked «token»."""
    grid = data.local_tokens(ex.seq, ex.start, window)
    grid = np.where(np.arange(window)[None, :] < (ex.stop - ex.start)[:, None], grid, -1)
    acts = data.activations(grid, ex.feature[:, None])
    text = render_windows(run.vocab, data.token_ids(grid), acts)
    return {"feature": ex.feature, "kind": np.array(KINDS, dtype=object)[ex.kind],
            "rank": ex.rank, "activation": ex.activation, "text": text, "seq": ex.seq,
            "start": ex.start, "stop": ex.stop}


def label_rows(features: np.ndarray, labels: dict[str, list[list[str]]]) -> dict[str, list]:
    out: dict[str, list] = {"feature": [], "method": [], "label": [], "rank": []}
    for method, per_feature in labels.items():
        for f, candidates in zip(features.tolist(), per_feature):
            for rank, text in enumerate(candidates):
                out["feature"].append(f)
                out["method"].append(method)
                out["label"].append(text)
                out["rank"].append(rank)
    return out


def label_run(cfg: LabelConfig) -> LabelResult:
    """Label every alive feature with every method and store labels + held-out examples."""
    t0 = time.perf_counter()
    labelers = {m: get_labeler(m) for m in dict.fromkeys(cfg.methods)}
    run = RunStore.open(cfg.run)
    run_id = cfg.run_id or run.dir.name
    features = run.alive.astype(np.int64)
    if len(features) == 0:
        raise UserError(f"{run.path} has no feature that fires on the train split; nothing to label")
    if len(run.heldout_seqs) == 0:
        raise UserError(f"{run.path} has no held-out sequences; re-extract with --heldout > 0")
    ctx = LabelContext(run=run, features=features, cfg=cfg, rng=np.random.default_rng(cfg.seed))
    # random borrows top-tokens labels, so compute those first when both are asked for
    for method in sorted(labelers, key=lambda m: m == "random"):
        candidates = labelers[method](ctx)
        if len(candidates) != len(features) or any(not c for c in candidates):
            raise RuntimeError(f"label method {method} must give >= 1 label per alive feature")
        ctx.labels[method] = candidates
    labels = {m: ctx.labels[m] for m in labelers}

    ecfg = cfg.example_config
    data = HeldoutSlice.load(run, heldout_seqs_for(run, ecfg.max_heldout_tokens))
    examples = sample_examples(data, features, ecfg)
    rows = label_db.LabelStageRows(
        run=_run_row(run), features=_feature_rows(run, examples.heldout_windows),
        labels=label_rows(features, labels), examples=example_rows(run, data, examples, ecfg.window),
        methods=tuple(labels))
    label_db.write_label_stage(cfg.db, run_id, rows)
    return LabelResult(run_id=run_id, db=str(cfg.db), methods=tuple(labels),
                       n_features=len(features), n_labels=len(rows.labels["label"]),
                       n_examples=len(examples), seconds=time.perf_counter() - t0)
