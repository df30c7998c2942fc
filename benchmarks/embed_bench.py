"""Embedding scorer throughput: texts/s of each embedder backend on label- and window-like texts.

    python benchmarks/embed_bench.py [--labels 8192] [--windows 1536] [--threads 2]

The texts mimic what `score` embeds for `benchmarks/label_bench.py`: short comma-separated labels
of three words and 16-word windows, from the MiniLM vocabulary, in that bench's ratio (36,864
labels to 6,708 windows). Each backend is timed on a fresh per-run cache (every text is new), and
model load (plus the one-off ONNX export when not cached yet) is timed apart. Agreement with the
sentence-transformers reference is the cosine of each text's two embeddings.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_translate.score import embedder  # noqa: E402
from sae_translate.synthetic import minilm_words  # noqa: E402


def bench_texts(n_labels: int, n_windows: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = np.array(minilm_words(4096))
    labels = [", ".join(r) for r in words[rng.integers(0, len(words), (n_labels, 3))]]
    windows = [" ".join(r) for r in words[rng.integers(0, len(words), (n_windows, 16))]]
    return labels + windows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, default=8192)
    p.add_argument("--windows", type=int, default=1536)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backends", default="torch,onnx,onnx-int8")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    texts = bench_texts(args.labels, args.windows)
    out: dict[str, object] = {"texts": len(texts), "threads": args.threads}
    reference = None
    for backend in args.backends.split(","):
        t0 = time.perf_counter()
        embedder.load_encoder("cpu", backend)
        load_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            emb = embedder.TextEmbedder("cpu", cache_dir=Path(tmp), backend=backend)
            t0 = time.perf_counter()
            vectors = emb(texts)
            seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            embedder.TextEmbedder("cpu", cache_dir=Path(tmp), backend=backend)(texts)
            cached_s = time.perf_counter() - t0
        row = {
            "load_s": round(load_s, 2),
            "embed_s": round(seconds, 2),
            "texts_per_s": round(len(texts) / seconds),
            "rescore_from_cache_s": round(cached_s, 3),
        }
        if backend == "torch":
            reference = vectors
        elif reference is not None:
            cos = (vectors * reference).sum(1)
            row["cos_vs_torch_min"] = round(float(cos.min()), 4)
            row["cos_vs_torch_median"] = round(float(np.median(cos)), 4)
        out[backend] = row
        print(json.dumps({backend: row}), flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
