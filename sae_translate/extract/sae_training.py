"""Train an SAE on a model's hook with sae-lens's own trainer (LanguageModelSAETrainingRunner).

The model comes from `sae_translate.extract.models.load_model` (a TransformerLens name or a local
checkpoint directory) and is handed to the runner as its override model; the corpus is packed
into token windows exactly as `extract` packs it (documents separated by EOS, no BOS) and given
to the runner as a tokenized dataset. The SAE is written with sae-lens's own saver, so
`sae_lens.SAE.load_from_disk(out)` reads it; sae-lens's evaluator then writes `eval.json`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sae_translate.errors import UserError
from sae_translate.extract.config import TrainSaeConfig
from sae_translate.store.atomic import check_writable

ARCHITECTURES = ("topk", "batchtopk", "standard")
EVAL_FILENAME = "eval.json"


def train_sae(cfg: TrainSaeConfig) -> Path:
    """Train and save an SAE to `cfg.out` (written to a temporary sibling, then renamed into
    place); returns `cfg.out`. An existing `cfg.out` is replaced."""
    import torch
    from sae_lens import (
        LanguageModelSAERunnerConfig,
        LanguageModelSAETrainingRunner,
        LoggingConfig,
    )

    from sae_translate.devices import resolve_device
    from sae_translate.extract.models import PROCESSING_DEFAULTS, hook_width, load_model

    _validate(cfg)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    check_writable(out.parent)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {out.parent}: {e.strerror}; pick a writable --out") from e
    torch.manual_seed(cfg.seed)
    # Recorded in the SAE's metadata, so whoever loads the SAE loads the model the same way.
    processing = dict(PROCESSING_DEFAULTS)
    model = load_model(cfg.model, device=device, dtype=cfg.model_dtype, processing=processing)
    if cfg.hook not in model.hook_dict:
        raise UserError(f"model {cfg.model!r} has no hook {cfg.hook!r}; hooks look like blocks.1.hook_resid_post")
    if cfg.context_size > model.cfg.n_ctx:
        raise UserError(f"context size {cfg.context_size} exceeds the model's {model.cfg.n_ctx}; lower --context-size")
    d_in = hook_width(model, cfg.hook)
    d_sae = cfg.d_sae or cfg.expansion * d_in
    dataset = _token_windows(cfg, model.tokenizer)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        runner_cfg = LanguageModelSAERunnerConfig(
            sae=_sae_config(cfg, d_in, d_sae, device),
            model_name=cfg.model,
            model_from_pretrained_kwargs=processing,
            hook_name=cfg.hook,
            dataset_path=cfg.dataset,
            is_dataset_tokenized=True,
            streaming=True,
            context_size=cfg.context_size,
            prepend_bos=False,  # windows are packed as extract packs them
            training_tokens=cfg.training_tokens,
            train_batch_size_tokens=cfg.batch_size_tokens,
            store_batch_size_prompts=cfg.store_batch_size_prompts,
            # sae-lens sizes its mixing buffer as n_batches_in_buffer * context_size tokens
            n_batches_in_buffer=max(cfg.buffer_tokens, 2 * cfg.batch_size_tokens) // cfg.context_size + 1,
            lr=cfg.lr,
            lr_warm_up_steps=cfg.lr_warm_up_steps,
            lr_decay_steps=int(cfg.steps * cfg.lr_decay_fraction),
            dead_feature_window=cfg.dead_feature_window,
            feature_sampling_window=max(cfg.dead_feature_window, cfg.steps),
            n_batches_for_norm_estimate=cfg.n_batches_for_norm_estimate,
            device=device,
            dtype="float32",
            seed=cfg.seed,
            logger=LoggingConfig(log_to_wandb=False),
            checkpoint_path=None,
            n_checkpoints=0,
            output_path=str(tmp),
            verbose=False,
        )
        with _quiet_sae_lens() as quiet:
            runner = LanguageModelSAETrainingRunner(runner_cfg, override_dataset=dataset, override_model=model)
            runner.run()
        if quiet.passes:
            print(
                f"note: the dataset holds fewer tokens than the {cfg.training_tokens:,} the SAE trains on "
                "(--training-tokens); it was read more than once",
                file=sys.stderr,
            )
        metrics = _evaluate(runner, tmp, cfg, device)
        (tmp / EVAL_FILENAME).write_text(json.dumps(metrics, indent=2))
        (tmp / "train_config.json").write_text(json.dumps(_jsonable(asdict(cfg)), indent=2))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _validate(cfg: TrainSaeConfig) -> None:
    if cfg.architecture not in ARCHITECTURES:
        raise UserError(f"unknown SAE architecture {cfg.architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    if cfg.training_tokens < cfg.batch_size_tokens:
        raise UserError(
            f"training tokens ({cfg.training_tokens}) must be at least one batch ({cfg.batch_size_tokens}); "
            "raise --training-tokens"
        )
    if cfg.k < 1 or (cfg.d_sae is not None and cfg.d_sae < 1) or cfg.expansion < 1 or cfg.context_size < 2:
        raise UserError("k, d_sae and expansion must be positive and the context size at least 2")
    if cfg.d_sae is not None and cfg.architecture != "standard" and cfg.k > cfg.d_sae:
        raise UserError(f"k ({cfg.k}) cannot exceed the SAE width ({cfg.d_sae})")


def _sae_config(cfg: TrainSaeConfig, d_in: int, d_sae: int, device: str) -> Any:
    from sae_lens import (
        BatchTopKTrainingSAEConfig,
        StandardTrainingSAEConfig,
        TopKTrainingSAEConfig,
    )

    common = dict(
        d_in=d_in, d_sae=d_sae, device=device, dtype="float32", normalize_activations=cfg.normalize_activations
    )
    if cfg.architecture == "topk":
        return TopKTrainingSAEConfig(k=cfg.k, **common)
    if cfg.architecture == "batchtopk":
        return BatchTopKTrainingSAEConfig(k=float(cfg.k), **common)
    return StandardTrainingSAEConfig(l1_coefficient=cfg.l1_coefficient, **common)


def _token_windows(cfg: TrainSaeConfig, tokenizer: Any) -> Any:
    """The corpus as a re-iterable stream of {"tokens": window} rows (sae-lens starts a new
    pass over it when it runs out, so a small corpus is seen for several epochs)."""
    from datasets import IterableDataset

    from sae_translate.extract.corpus import iter_documents, pack_windows

    def rows() -> Iterator[dict[str, list[int]]]:
        documents = iter_documents(
            cfg.dataset, text_column=cfg.text_column, split=cfg.dataset_split, name=cfg.dataset_name
        )
        for window in pack_windows(documents, tokenizer, cfg.context_size):
            yield {"tokens": window.tolist()}

    first = next(rows(), None)  # fail here, with a clear message, rather than inside sae-lens
    if first is None:
        raise UserError(
            f"dataset {cfg.dataset!r} holds fewer than {cfg.context_size} tokens; add text or lower --context-size"
        )
    return IterableDataset.from_generator(rows)


def _evaluate(runner: Any, sae_dir: Path, cfg: TrainSaeConfig, device: str) -> dict[str, Any]:
    """sae-lens's own evaluator on the saved SAE: explained variance, L0, CE-loss recovery, and
    the share of features that fired on the evaluation tokens."""
    from sae_lens import SAE
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.training.activation_scaler import ActivationScaler

    with _quiet_sae_lens():
        sae = SAE.load_from_disk(str(sae_dir), device=device)
    eval_cfg = EvalConfig(
        n_eval_reconstruction_batches=cfg.eval_batches,
        n_eval_sparsity_variance_batches=cfg.eval_batches,
        compute_ce_loss=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
        compute_featurewise_density_statistics=True,
    )
    with _quiet_sae_lens():
        metrics, features = run_evals(
            sae, runner.activations_store, runner.model, ActivationScaler(), eval_cfg, exclude_special_tokens=True
        )
    density = features["feature_density"]
    return {
        "d_sae": sae.cfg.d_sae,
        "hook": cfg.hook,
        "explained_variance": metrics["reconstruction_quality"]["explained_variance"],
        "l0": metrics["sparsity"]["l0"],
        "ce_loss_score": metrics["model_performance_preservation"]["ce_loss_score"],
        "ce_loss_without_sae": metrics["model_performance_preservation"]["ce_loss_without_sae"],
        "ce_loss_with_sae": metrics["model_performance_preservation"]["ce_loss_with_sae"],
        "alive_features": int(sum(d > 0 for d in density)),
        "eval_tokens": int(metrics["token_stats"].get("total_tokens_eval_sparsity_variance", 0)),
    }


# sae-lens warnings said in our own words or not at all: the model kwargs are applied by
# saes.model_kwargs_for, and a dataset smaller than the training tokens starts another pass over it
_HANDLED_WARNINGS = ("model_from_pretrained_kwargs", "have been exhausted")


class _quiet_sae_lens:
    """sae-lens logs a warning on every override and warns in the middle of the progress bar; keep
    the console to our own progress bars. ``passes`` is set when the training data ran out and
    sae-lens began another pass over it."""

    passes = False

    def __enter__(self) -> _quiet_sae_lens:
        self.logger = logging.getLogger("sae_lens")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        warnings.simplefilter("default")
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.level)
        self._warnings.__exit__(None, None, None)  # restores the filters whatever happened
        for w in self._caught:
            text = str(w.message)
            self.passes |= "have been exhausted" in text
            if not any(handled in text for handled in _HANDLED_WARNINGS):
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def replace_dir(src: Path, dst: Path) -> None:
    """Move a finished directory into place; an old one is removed only after the swap."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
