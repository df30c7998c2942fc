"""Describer throughput: `describe-corpus` labels for every feature of a run as wide as a real SAE.

    python benchmarks/describer_bench.py [--d-sae 32768] [--n-seq 16384] [--workers 0] [--out stores/bench-label]

Uses the synthetic planted-feature run of label_bench.py (reused when present with the same
shape). Times the describer's parts: the WordNet index over the vocabulary, the train sample with
its counts and each feature's firing positions, and describing every alive feature (candidate
rules from its corpus evidence, fidelity of each) in ``--workers`` processes as the label stage
does (0: one per CPU core). Prints a markdown row for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import torch

from sae_translate.bench.synthetic import wide_bench_run
from sae_translate.label.describe import describe_features, label_workers, rule_evaluator
from sae_translate.label.describer import Describer, DescriberConfig, TrainSample


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-sae", type=int, default=32768)
    p.add_argument("--n-seq", type=int, default=16384)
    p.add_argument("--ctx", type=int, default=64)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=0, help="describer processes (0: one per CPU core)")
    p.add_argument("--out", type=Path, default=Path("stores/bench-label"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    run = wide_bench_run(args.out / "run", args.d_sae, args.n_seq, args.ctx, args.vocab)
    features = run.alive.astype(np.int64)
    print(f"run: {run.d_sae} features ({len(features)} alive), {run.n_tokens:,} tokens, vocab {len(run.vocab)}")

    t0 = time.perf_counter()
    evaluator, categories = rule_evaluator(run.vocab)
    _ = categories.index  # built on first use otherwise: time it here, not inside the first describe
    t_index = time.perf_counter() - t0
    cfg = DescriberConfig()
    t0 = time.perf_counter()
    sample = TrainSample(run, evaluator, features, cfg)
    t_sample = time.perf_counter() - t0
    describer = Describer(sample, categories, cfg)
    workers = label_workers(args.workers, len(features))
    t0 = time.perf_counter()
    found = describe_features(describer, features, lambda i: sample.evidence(int(features[i])), workers)
    t_describe = time.perf_counter() - t0
    kinds = Counter(d.rule.kind if d else "none" for d in found)
    total = t_index + t_sample + t_describe
    print(
        f"WordNet index {t_index:.1f}s, train sample {t_sample:.1f}s, describe {t_describe:.1f}s "
        f"({len(features) / t_describe:,.0f} features/s); all {total:.1f}s "
        f"({len(features) / total:,.0f} features/s); rule kinds {dict(kinds)}"
    )
    # the largest process: this one or a worker (a worker shares most of its pages with this one)
    peak_gb = max(resource.getrusage(r).ru_maxrss for r in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 2**20
    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads x {workers} workers, CPU"
    print(
        f"\n| {date.today()} | {machine} | {run.d_sae} ({len(features)} alive) | {len(run.vocab):,} | "
        f"{t_index:.1f}s | {t_sample:.1f}s | {t_describe:.1f}s ({len(features) / t_describe:,.0f} features/s) | "
        f"{total:.1f}s ({len(features) / total:,.0f} features/s) | {peak_gb:.1f} GB |"
    )


if __name__ == "__main__":
    main()
