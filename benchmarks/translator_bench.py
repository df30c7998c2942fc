"""Translator training tokens/s and translator labelling features/s on a run.

    python benchmarks/translator_bench.py [--run stores/demo] [--steps 200] [--device auto]
        [--dim 64 --depth 1 --crop 16 --batch-size 32] [--mode unsupervised]

Trains `--steps` steps from scratch into a temporary directory (after a few warm-up steps that
are not timed) and reports training throughput as text positions consumed per second: per step,
batch_size sentences x crop positions in each of the two languages. Then decodes every alive
feature as translator labels do (`context_distributions`: the feature alone and in its top train
windows, the text distributions at offsets -3..+3; the describer that turns them into a label is
not timed) and reports features/s. Under torchrun the global batch is split over ranks and rank 0
reports.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date

import numpy as np
import torch

from sae_translate.label.describer import OFFSETS
from sae_translate.store.h5 import RunStore
from sae_translate.translator.languages import build_languages
from sae_translate.translator.run import context_distributions
from sae_translate.translator.train import Trainer, TranslatorConfig

WARMUP = 5


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="stores/demo")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--mode", default="unsupervised")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--crop", type=int, default=16)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with RunStore.open(args.run) as run:
        languages = build_languages(run)
        top_positions = run.top_positions
        alive = np.flatnonzero(run.stats.count > 0)
    features, text = languages.unsupervised()
    pairs = languages.aligned() if args.mode == "aligned" else None
    cfg = TranslatorConfig(
        mode=args.mode,
        steps=WARMUP + args.steps,
        batch_size=args.batch_size,
        crop=args.crop,
        dim=args.dim,
        depth=args.depth,
        decoder_depth=args.depth,
        device=args.device,
        eval_every=10**9,
        checkpoint_every=10**9,
        progress=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        trainer = Trainer(cfg, features, text, tmp, pairs)
        setup = time.perf_counter() - t0
        for _ in range(WARMUP):
            trainer.train_step()
        sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        sync()
        train_s = time.perf_counter() - t0
        positions = min(args.crop or languages.ctx, languages.ctx)
        tokens_per_step = 2 * cfg.batch_size * positions
        if not trainer.ranks.main:
            return
        checkpoint = trainer.save_best()
        t0 = time.perf_counter()
        context_distributions(checkpoint, languages, alive, top_positions, OFFSETS, device=args.device)
        label_s = time.perf_counter() - t0

    result = {
        "run": args.run,
        "mode": args.mode,
        "device": str(trainer.device),
        "world_size": trainer.ranks.world_size,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "batch_size": cfg.batch_size,
        "crop": positions,
        "dim": cfg.dim,
        "depth": cfg.depth,
        "setup_s": round(setup, 2),
        "s_per_step": round(train_s / args.steps, 4),
        "train_tokens_per_s": round(tokens_per_step * args.steps / train_s),
        "features": len(alive),
        "label_s": round(label_s, 2),
        "label_features_per_s": round(len(alive) / label_s, 1),
        "machine": platform.processor() or platform.machine(),
        "date": str(date.today()),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
