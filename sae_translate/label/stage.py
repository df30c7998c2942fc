"""The label stage: every alive feature labelled by every method, with held-out example windows.

Labels come from the train split only; the example windows written beside them come from the
held-out split (see ``examples.py``), where the scorers grade them.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from sae_translate.devices import resolve_device
from sae_translate.errors import UserError
from sae_translate.label.base import (
    Label,
    LabelConfig,
    LabelContext,
    LabelResult,
    get_labeler,
)
from sae_translate.label.config import AUTO, BASELINES, CRITERIA
from sae_translate.label.describe import check_workers
from sae_translate.label.examples import (
    KINDS,
    ExampleSet,
    HeldoutSlice,
    heldout_seqs_for,
    render_windows,
    sample_examples,
)
from sae_translate.store import db as label_db
from sae_translate.store.h5 import RunStore
from sae_translate.translator.run import translator_dir


def _run_row(run: RunStore) -> dict:
    a = run.attrs
    return {
        "path": str(run.dir.resolve()),
        "model": str(a.get("model", "")),
        "hook": str(a.get("hook", "")),
        "sae": str(a.get("sae", "")),
        "dataset": str(a.get("dataset", "")),
        "d_sae": run.d_sae,
        "n_tokens": run.n_tokens,
        "world": str(a.get("world", "") or ""),
        "created_at": datetime.now(timezone.utc).replace(tzinfo=None),
        "config": str(a.get("config", "{}")),
    }


def _feature_rows(run: RunStore, heldout_windows: np.ndarray) -> dict[str, np.ndarray]:
    stats = run.stats
    return {
        "feature": np.arange(run.d_sae, dtype=np.int32),
        "alive": stats.count > 0,
        "count": stats.count.astype(np.int64),
        "frequency": stats.frequency.astype(np.float64),
        "max_activation": stats.max.astype(np.float32),
        "mean_activation": stats.mean.astype(np.float32),
        "heldout_windows": heldout_windows,
    }


def example_rows(run: RunStore, data: HeldoutSlice, ex: ExampleSet, window: int) -> dict:
    """Example windows as table rows, text with firing tokens marked «token»."""
    grid = data.local_tokens(ex.seq, ex.start, window)
    grid = np.where(np.arange(window)[None, :] < (ex.stop - ex.start)[:, None], grid, -1)
    acts = data.activations(grid, ex.feature[:, None])
    text = render_windows(run.vocab, data.token_ids(grid), acts)
    return {
        "feature": ex.feature,
        "kind": np.array(KINDS, dtype=object)[ex.kind],
        "rank": ex.rank,
        "activation": ex.activation,
        "text": text,
        "seq": ex.seq,
        "start": ex.start,
        "stop": ex.stop,
    }


def label_rows(features: np.ndarray, labels: dict[str, list[list[Label]]]) -> dict[str, list]:
    out: dict[str, list] = {
        "feature": [],
        "method": [],
        "label": [],
        "rank": [],
        "rule_kind": [],
        "rule": [],
        "fidelity": [],
    }
    for method, per_feature in labels.items():
        for f, candidates in zip(features.tolist(), per_feature):
            for rank, label in enumerate(candidates):
                out["feature"].append(f)
                out["method"].append(method)
                out["label"].append(label.text)
                out["rank"].append(rank)
                out["rule_kind"].append(label.rule.kind if label.rule is not None else None)
                out["rule"].append(label.rule.to_json() if label.rule is not None else None)
                out["fidelity"].append(label.fidelity)
    return out


def label_methods(methods: tuple[str, ...], run_dir: Path) -> list[str]:
    """The methods to run, ``auto`` expanded: the translator methods whose checkpoints the run
    has (after `sae-translate train`), describe-corpus and the baselines."""
    out: list[str] = []
    for method in methods:
        if method != AUTO:
            out.append(method)
            continue
        for name, mode in (("translator", "unsupervised"), ("translator-aligned", "aligned")):
            if (translator_dir(run_dir, mode) / "best.safetensors").exists():
                out.append(name)
        out += ["describe-corpus", *BASELINES]
    return list(dict.fromkeys(out))


def check_label_options(cfg: LabelConfig) -> None:
    """The options' values, checked before the run is opened (and by a pipeline file's load)."""
    if not cfg.methods:
        raise UserError(f"no label method given; pass --methods {AUTO} or a comma-separated list")
    for method in cfg.methods:  # unknown names fail before the run is opened
        if method != AUTO:
            get_labeler(method)
    for option, value in (("--window", cfg.window), ("--label-tokens", cfg.label_tokens)):
        if value < 1:  # --label-tokens 0 labelled every feature "<none>"
            raise UserError(f"{option} must be 1 or more (got {value})")
    for option, value in (
        ("--n-top-examples", cfg.n_top_examples),
        ("--n-quantiles", cfg.n_quantiles),
        ("--n-per-quantile", cfg.n_per_quantile),
    ):
        if value < 0:
            raise UserError(f"{option} must be 0 or more (got {value})")
    if cfg.fidelity not in CRITERIA:
        raise UserError(f"unknown --fidelity {cfg.fidelity!r}; choose from {', '.join(CRITERIA)}")
    check_workers(cfg.workers)  # before any work: a run of baselines alone never starts the describer
    resolve_device(cfg.device)  # used only once labels are written, by the scorers: checked now


def label_run(cfg: LabelConfig) -> LabelResult:
    """Label every alive feature with every method and store labels + held-out examples."""
    t0 = time.perf_counter()
    check_label_options(cfg)
    label_db.check_db_writable(cfg.db)  # labelling a large run takes long: a bad --db fails first
    with RunStore.open(cfg.run) as run:
        labelers = {m: get_labeler(m) for m in label_methods(tuple(cfg.methods), run.dir)}
        return _label(run, cfg, labelers, t0)


def _label(run: RunStore, cfg: LabelConfig, labelers: dict, t0: float) -> LabelResult:
    run_id = cfg.run_id or run.dir.name
    features = run.alive.astype(np.int64)
    if len(features) == 0:
        raise UserError(f"{run.path} has no feature that fires on the train split; nothing to label")
    if len(run.heldout_seqs) == 0:
        raise UserError(f"{run.path} has no held-out sequences; re-extract with --heldout > 0")
    ctx = LabelContext(run=run, features=features, cfg=cfg, rng=np.random.default_rng(cfg.seed))
    # random borrows top-tokens labels, so compute those first when both are asked for
    for method in sorted(labelers, key=lambda m: m == "random"):
        # a method may give plain strings: free-text labels, scored by the words they name
        candidates = [[c if isinstance(c, Label) else Label(str(c)) for c in cs] for cs in labelers[method](ctx)]
        if len(candidates) != len(features) or any(not c for c in candidates):
            raise RuntimeError(f"label method {method} must give >= 1 label per alive feature")
        ctx.labels[method] = candidates
    labels = {m: ctx.labels[m] for m in labelers}

    ecfg = cfg.example_config
    data = HeldoutSlice.load(run, heldout_seqs_for(run, ecfg.max_heldout_tokens))
    examples = sample_examples(data, features, ecfg)
    rows = label_db.LabelStageRows(
        run=_run_row(run),
        features=_feature_rows(run, examples.heldout_windows),
        labels=label_rows(features, labels),
        examples=example_rows(run, data, examples, ecfg.window),
        methods=tuple(labels),
    )
    label_db.write_label_stage(cfg.db, run_id, rows)
    return LabelResult(
        run_id=run_id,
        db=str(cfg.db),
        methods=tuple(labels),
        n_features=len(features),
        n_labels=len(rows.labels["label"]),
        n_examples=len(examples),
        seconds=time.perf_counter() - t0,
    )
