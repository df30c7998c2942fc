"""The extract stage's settings: light to import (no torch), so the command line can read its options."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass


@dataclass
class ExtractConfig:
    model: str  # TransformerLens model name (pythia-160m) or local checkpoint dir
    sae: str  # RELEASE/SAE_ID, sparsify:REPO/LAYER, or a local SAE dir
    dataset: str  # hub dataset name, or local .txt/.jsonl/.parquet files, dir or glob
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
    top_k_codes: int | None = None  # keep only the k largest codes per token (None = exact)
    n_top: int = 32  # top activations remembered per feature
    logit_lens_k: int = 10  # tokens kept per feature by the logit lens
    value_dtype: str = "float16"  # storage dtype of code values
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
