"""The extract stage's settings (extract, and train-sae): light to import (no torch, TransformerLens or
sae-lens), so the command line can read their options."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class ExtractConfig:
    model: str  # TransformerLens model name (pythia-160m) or local checkpoint dir
    sae: str  # RELEASE/SAE_ID, sparsify:REPO/LAYER, or a local SAE dir
    dataset: str  # hub dataset name, or local .txt/.jsonl/.parquet/.csv files, dir or glob
    out: str = "stores/run"  # run directory
    hook: str | None = None  # defaults to the SAE's own hook
    tokens: int = 1_000_000  # upper bound on tokens extracted
    ctx: int = 128  # context length of each window
    batch_size: int = 32  # sequences per forward pass
    chunk_seqs: int = 256  # sequences per resumable chunk
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    dtype: str = "float32"  # model dtype: float32, bfloat16, float16
    heldout: float = 0.1  # share of sequences held out for scoring
    seed: int = 0
    top_k_codes: int | None = None  # keep only the k largest codes per token (unset: every code)
    n_top: int = 32  # top activations remembered per feature
    logit_lens_k: int = 10  # tokens kept per feature by the logit lens
    value_dtype: str = "float16"  # storage dtype of code values: float16 or float32
    text_column: str = "text"  # column holding the text
    dataset_split: str = "train"  # split of a hub dataset
    dataset_name: str | None = None  # hub dataset configuration
    world: str = ""  # toy-world directory, for ground-truth scoring
    force: bool = False  # replace an existing run made with other settings
    progress: bool = True  # progress bar on stderr

    def identity(self) -> dict:
        """The settings that determine the output; batch size, device and progress do not."""
        skip = {"batch_size", "device", "force", "progress", "out"}
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrainSaeConfig:
    model: str  # TransformerLens model name (pythia-160m) or local checkpoint dir, as extract takes
    hook: str  # e.g. blocks.1.hook_resid_post
    dataset: str  # hub dataset name, or local .txt/.jsonl/.parquet/.csv files, a directory or a glob
    out: Path  # directory to save the SAE in (sae-lens format)
    architecture: str = "topk"  # topk | batchtopk | standard (L1)
    d_sae: int | None = None  # dictionary width; None = expansion * d_in
    expansion: int = 8  # d_sae = expansion * d_in when d_sae is not given
    k: int = 8  # active features per token (topk, batchtopk)
    l1_coefficient: float = 5.0  # sparsity penalty (standard)
    training_tokens: int = 1_000_000  # tokens the SAE trains on
    context_size: int = 128  # tokens per sequence
    batch_size_tokens: int = 4096  # tokens per training step
    lr: float = 4e-4  # learning rate
    lr_warm_up_steps: int = 0  # steps of linear warm-up
    lr_decay_fraction: float = 0.2  # share of the steps, at the end, over which lr decays to 0
    store_batch_size_prompts: int = 16  # sequences per model forward pass
    buffer_tokens: int = 65_536  # activations shuffled together before batches are served
    dead_feature_window: int = 100  # steps without firing before a feature counts as dead
    normalize_activations: str = "expected_average_only_in"  # folded into the weights at the end
    n_batches_for_norm_estimate: int = 20  # batches that estimate the activation norm
    eval_batches: int = 8  # batches of the final evaluation (eval.json)
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    model_dtype: str = "float32"  # float32, bfloat16, float16
    seed: int = 0
    text_column: str = "text"  # column holding the text
    dataset_split: str = "train"  # split of a hub dataset
    dataset_name: str | None = None  # configuration of a hub dataset

    @property
    def steps(self) -> int:
        return self.training_tokens // self.batch_size_tokens
