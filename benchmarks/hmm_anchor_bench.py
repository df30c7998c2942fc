"""The HMM anchor alone on the HMM benchmark's data: its accuracy against the lookup bound and the
ceiling, the fit time, and (for diagnosis only, knowing the true HMM) how far the fits' likelihoods
are from the true parameters' and whether the state match is the one the true states give.

    python benchmarks/hmm_anchor_bench.py --states 12 --vocab-a 40 --vocab-b 40 --seeds 0 1 2 3 4

The anchor sees exactly the sentences the benchmark's unsupervised translator fits it on (the
trainer's shuffle with the translator's seed, the model-selection sentences held out); nothing
the anchor reads knows the true HMM or the pairs. One JSON line per seed, then a summary line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

from sae_translate.bench.config import BenchConfig, HMMConfig
from sae_translate.bench.hmm import both_ways, gap_closed, make_data
from sae_translate.translator.hmm_anchor import FittedHMM, HMMFitConfig, _expected_counts, fit_hmm_anchor


def trainer_sentences(sentences: np.ndarray, rng: np.random.Generator, select: int) -> np.ndarray:
    """What the unsupervised trainer fits the anchor on: its shuffle, selection sentences held out."""
    shuffled = sentences[rng.permutation(len(sentences))]
    return shuffled[min(select, len(shuffled) // 5) :]


def mean_log_likelihood(sentences: np.ndarray, hmm: FittedHMM) -> float:
    return _expected_counts(sentences, hmm.transition, hmm.initial, hmm.emission)[3] / sentences.size


def true_states(fitted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """For each fitted state, the true state whose emission row it is closest to (one-to-one)."""
    rows, cols = linear_sum_assignment(np.abs(fitted[:, None] - true[None]).sum(-1))
    return cols[np.argsort(rows)]


def run(hcfg: HMMConfig, bench: BenchConfig, fit: HMMFitConfig) -> dict:
    data = make_data(hcfg, bench.n_train, bench.n_test)
    hmm, tcfg = data.hmm, bench.translator
    rng = np.random.default_rng(tcfg.seed)
    a = trainer_sentences(data.train_a, rng, tcfg.select_sentences)
    b = trainer_sentences(data.train_b, rng, tcfg.select_sentences)
    start = time.perf_counter()
    anchor = fit_hmm_anchor(a, hcfg.vocab_a, b, hcfg.vocab_b, fit)
    seconds = time.perf_counter() - start
    lookup, ceiling = both_ways(data, hmm.lookup_translate), both_ways(data, hmm.ceiling_translate)
    accuracy = both_ways(data, lambda x, src, tgt: anchor.translate(x, "ab".index(src)))
    # diagnosis only: the true HMM's likelihood and the match the true states give
    true_a = FittedHMM(hmm.transition, hmm.initial, hmm.emission_a, np.nan)
    true_b = FittedHMM(hmm.transition, hmm.initial, hmm.emission_b, np.nan)
    ta, tb = true_states(anchor.hmms[0].emission, hmm.emission_a), true_states(anchor.hmms[1].emission, hmm.emission_b)
    oracle_perm = np.argsort(tb)[ta]  # state k of a -> the b state with the same true state
    return {
        "seed": hcfg.seed,
        "lookup": lookup,
        "ceiling": ceiling,
        "anchor": accuracy,
        "anchor_gap_closed": gap_closed(accuracy, lookup, ceiling),
        "match_right": bool((anchor.match.perm == oracle_perm).all()),
        "discrepancy": anchor.match.discrepancy,
        "runner_up": anchor.match.runner_up,
        "ll_gap_a": mean_log_likelihood(a, anchor.hmms[0]) - mean_log_likelihood(a, true_a),
        "ll_gap_b": mean_log_likelihood(b, anchor.hmms[1]) - mean_log_likelihood(b, true_b),
        "seconds": seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--states", type=int, default=8)
    p.add_argument("--vocab-a", type=int, default=12)
    p.add_argument("--vocab-b", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args()
    bench = BenchConfig()
    rows = []
    for seed in args.seeds:
        hcfg = HMMConfig(states=args.states, vocab_a=args.vocab_a, vocab_b=args.vocab_b, seed=seed)
        row = run(hcfg, bench, HMMFitConfig(states=args.states, seed=bench.translator.seed))
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    summary = {
        "above_lookup": sum(r["anchor"] >= r["lookup"] for r in rows),
        "mean_gap_closed": float(np.mean([r["anchor_gap_closed"] for r in rows])),
        "matches_right": sum(r["match_right"] for r in rows),
        "mean_seconds": float(np.mean([r["seconds"] for r in rows])),
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
