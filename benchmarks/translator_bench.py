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

    python benchmarks/translator_bench.py --vocab-grid [--grid-steps 3] [--dim 64 ...]

Step time and peak memory against the vocabularies: synthetic Zipf-distributed languages of
text vocabulary 318 / 9,000 / 50,000 x feature vocabulary 512 / 4,096 / 32,768 (1,024 windows of
64 positions each), each cell timed (median step) with the full softmax (`--sampled-softmax 0`, as before it
existed) and with the default sampled softmax, each run in its own process so that its peak
resident memory is its own. The unsupervised step of steady state: denoising, the dictionary
pass (a random dictionary: the anchor is not timed), back-translation from the model's own
translations, the discriminator.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date

import numpy as np
import torch

from sae_translate.label.describer import OFFSETS
from sae_translate.store.h5 import RunStore
from sae_translate.translator.anchor import WordDictionary
from sae_translate.translator.languages import build_languages
from sae_translate.translator.run import context_distributions
from sae_translate.translator.train import Corpus, Trainer, TranslatorConfig

WARMUP = 5
TEXT_VOCABS = (318, 9000, 50000)
FEATURE_VOCABS = (512, 4096, 32768)
GRID_SENTENCES, GRID_LENGTH = 1024, 64
GRID_MIN_SECONDS = 4.0  # each cell times at least --grid-steps steps and at least this long


def zipf_corpus(vocab: int, seed: int) -> Corpus:
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, vocab + 1)
    return Corpus(rng.choice(vocab, size=(GRID_SENTENCES, GRID_LENGTH), p=p / p.sum()), vocab)


def random_dictionary(vocab_a: int, vocab_b: int, keep: int = 4) -> WordDictionary:
    g = torch.Generator().manual_seed(0)
    ids = (torch.randint(vocab_b, (vocab_a, keep), generator=g), torch.randint(vocab_a, (vocab_b, keep), generator=g))
    return WordDictionary(ids, (torch.full((vocab_a, keep), 1 / keep), torch.full((vocab_b, keep), 1 / keep)))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def grid_cell(cfg: TranslatorConfig, text_vocab: int, feature_vocab: int, steps: int) -> dict:
    """One cell of the vocabulary grid, in this process: s/step and peak memory."""
    features, text = zipf_corpus(feature_vocab, 0), zipf_corpus(text_vocab, 1)
    start_mb = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(replace(cfg, anchor=False, dictionary_steps=0), features, text, tmp)
        trainer.dictionary = random_dictionary(feature_vocab, text_vocab)
        cuda = trainer.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        for _ in range(2):
            trainer.train_step()
        sync()
        # the median step: other jobs on a shared machine stall some steps, not the typical one
        times: list[float] = []
        while len(times) < steps or sum(times) < GRID_MIN_SECONDS:
            t0 = time.perf_counter()
            trainer.train_step()
            sync()
            times.append(time.perf_counter() - t0)
        seconds = float(np.median(times))
    peak = (
        torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "text_vocab": text_vocab,
        "feature_vocab": feature_vocab,
        "sampled_softmax": cfg.sampled_softmax,
        "s_per_step": round(seconds, 4),
        "timed_steps": len(times),
        "peak_mb": round(peak),
        "start_mb": round(start_mb) if not cuda else 0,
        "device": str(trainer.device),
    }


def vocab_grid(args: argparse.Namespace) -> None:
    """Every cell before (full softmax) and after (sampled), each in a child process; one markdown table."""
    load = os.getloadavg()
    rows = []
    for text_vocab in TEXT_VOCABS:
        for feature_vocab in FEATURE_VOCABS:
            cells = {}
            for threshold in (0, TranslatorConfig().sampled_softmax):
                cmd = [sys.executable, __file__, "--cell", str(text_vocab), str(feature_vocab)]
                cmd += ["--sampled-softmax", str(threshold), "--grid-steps", str(args.grid_steps)]
                cmd += ["--device", args.device, "--dim", str(args.dim), "--depth", str(args.depth)]
                cmd += ["--crop", str(args.crop), "--batch-size", str(args.batch_size)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                cells[threshold] = json.loads(out.strip().splitlines()[-1])
            before, after = cells[0], cells[TranslatorConfig().sampled_softmax]
            rows.append((before, after))
            print(json.dumps({"before": before, "after": after}), flush=True)
    unit = "GPU MiB allocated" if rows[0][0]["device"].startswith("cuda") else "MiB RSS"
    print(f"\nload average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; after: {os.getloadavg()[0]:.2f}")
    print(
        f"device {rows[0][0]['device']}, dim {args.dim}, {args.depth}+{args.depth} layers, batch {args.batch_size}, "
        f"crop {args.crop or GRID_LENGTH}, threads {torch.get_num_threads()}; the median of at least "
        f"{args.grid_steps} steps and {GRID_MIN_SECONDS:.0f} s after 2 untimed ones\n"
    )
    print(f"| text words | feature words | s/step full | s/step sampled | speed-up | peak {unit} full | peak sampled |")
    print("|---|---|---|---|---|---|---|")
    for before, after in rows:
        print(
            f"| {before['text_vocab']:,} | {before['feature_vocab']:,} | {before['s_per_step']:.3f} | "
            f"{after['s_per_step']:.3f} | {before['s_per_step'] / after['s_per_step']:.1f}x | "
            f"{before['peak_mb']:,} | {after['peak_mb']:,} |"
        )


def bench_config(args: argparse.Namespace, **overrides) -> TranslatorConfig:
    """The translator settings the command line gives, plus ``overrides``."""
    return TranslatorConfig(
        batch_size=args.batch_size,
        crop=args.crop,
        dim=args.dim,
        depth=args.depth,
        decoder_depth=args.depth,
        device=args.device,
        sampled_softmax=args.sampled_softmax,
        progress=False,
        **overrides,
    )


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
    p.add_argument("--vocab-grid", action="store_true", help="step time and memory against both vocabularies")
    p.add_argument("--grid-steps", type=int, default=3, help="timed steps per grid cell")
    p.add_argument("--cell", type=int, nargs=2, metavar=("TEXT", "FEATURES"), help=argparse.SUPPRESS)
    p.add_argument("--sampled-softmax", type=int, default=TranslatorConfig().sampled_softmax)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.vocab_grid:
        return vocab_grid(args)
    if args.cell:
        print(json.dumps(grid_cell(bench_config(args), *args.cell, args.grid_steps)))
        return

    with RunStore.open(args.run) as run:
        languages = build_languages(run)
        top_positions = run.top_positions
        alive = np.flatnonzero(run.stats.count > 0)
    features, text = languages.unsupervised()
    pairs = languages.aligned() if args.mode == "aligned" else None
    cfg = bench_config(args, mode=args.mode, steps=WARMUP + args.steps, eval_every=10**9, checkpoint_every=10**9)
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
