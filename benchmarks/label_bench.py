"""Label + score throughput on a synthetic run as wide as a real SAE (default 32768 features).

    python benchmarks/label_bench.py [--d-sae 32768] [--n-seq 16384] [--ctx 64] [--out stores/bench-label]
        [--embedder onnx-int8|onnx|torch]

Writes a planted-feature run (every feature has a trigger word, plus background firings), labels
it with the baselines, scores the labels, and prints one line per phase plus a markdown row for
BENCHMARKS.md. The run is reused when it already exists with the same shape.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package

from sae_translate.bench.synthetic import wide_bench_run  # noqa: E402
from sae_translate.label import BASELINES, LabelConfig, label_run  # noqa: E402
from sae_translate.score import ScoreConfig, score_run, summary_table  # noqa: E402


def embedded_texts(cache: Path) -> int:
    """Texts the embedding scorer embedded (rows of its per-run cache shards)."""
    total = 0
    for shard in cache.glob("*/shard-*.npz"):
        with np.load(shard) as z:
            total += len(z["keys"])
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-sae", type=int, default=32768)
    p.add_argument("--n-seq", type=int, default=16384)
    p.add_argument("--ctx", type=int, default=64)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("stores/bench-label"))
    p.add_argument("--embedder", default="onnx-int8", help="embedder backend: onnx-int8, onnx or torch")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["SAE_TRANSLATE_EMBEDDER"] = args.embedder

    run_dir, db = args.out / "run", args.out / "labels.duckdb"
    t0 = time.perf_counter()
    run = wide_bench_run(run_dir, args.d_sae, args.n_seq, args.ctx, args.vocab)
    print(f"synthetic run ready: {time.perf_counter() - t0:.1f}s")
    n_alive = len(run.alive)
    print(
        f"run: {run.d_sae} features ({n_alive} alive), {run.n_tokens:,} tokens, "
        f"{len(run.heldout_seqs)} held-out sequences"
    )
    db.unlink(missing_ok=True)
    shutil.rmtree(run_dir / "embeddings", ignore_errors=True)  # time embedding every text afresh

    labelled = label_run(LabelConfig(run=str(run_dir), db=str(db), methods=BASELINES))
    print(
        f"label (3 baselines + examples): {labelled.seconds:.1f}s, "
        f"{labelled.n_features / labelled.seconds:,.0f} features/s, {labelled.n_examples:,} examples"
    )
    cheap = score_run(ScoreConfig(run=str(run_dir), db=str(db), scorers=("detection", "simulation")))
    print(f"score detection + simulation: {cheap.seconds:.1f}s")
    emb = score_run(ScoreConfig(run=str(run_dir), db=str(db), scorers=("embedding",)))
    n_texts = embedded_texts(run_dir / "embeddings")
    print(
        f"score embedding ({args.embedder}, incl. model load): {emb.seconds:.1f}s, "
        f"{n_texts:,} distinct texts, {n_texts / emb.seconds:,.0f} texts/s"
    )
    print(summary_table(cheap.summary + emb.summary))

    total = labelled.seconds + cheap.seconds + emb.seconds
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads, CPU"
    print(
        f"\n| {date.today()} | {machine} | {run.d_sae} ({n_alive} alive) | {run.n_tokens:,} | "
        f"{labelled.seconds:.1f}s ({n_alive / labelled.seconds:,.0f} features/s) | "
        f"{cheap.seconds:.1f}s | {emb.seconds:.1f}s | {total:.1f}s "
        f"({n_alive / total:,.0f} features/s) | {peak_gb:.1f} GB |"
    )


if __name__ == "__main__":
    main()
