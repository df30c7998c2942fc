"""WordNet category index: build time and propose() throughput on a 10k-word vocabulary.

    python benchmarks/wordnet_bench.py [--words 10000] [--calls 2000]

The vocabulary is a fixed sample of Debian's wamerican word list (/usr/share/dict/words) when it is
installed, else of WordNet's own lemmas; half the words carry the "Ġ" word-start marker of a BPE
vocabulary. Each feature is a few words of one random category plus weaker random words, as a
describer would pass them; "wide" features spread weight over 200 tokens.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_translate.label.wordnet import CategoryIndex, load_wordnet  # noqa: E402

WORDS = Path("/usr/share/dict/words")


def vocabulary(n: int, wn) -> tuple[list[str], str]:
    if WORDS.is_file():
        words, source = [w for w in WORDS.read_text().split() if w.isalpha() and w.islower()], str(WORDS)
    else:
        words, source = [w for w in wn.all_lemma_names() if w.isalpha()], "WordNet lemmas"
    words = sorted(set(words))
    random.Random(0).shuffle(words)
    vocab = [("Ġ" + w if i % 2 else w) for i, w in enumerate(words[:n])]
    return vocab + [".", ",", "Ġthe", "Ġof", "'s", "123"], source


def features(index: CategoryIndex, n: int, width: int, rng: random.Random) -> list[dict[int, float]]:
    sizable = [s for s in index._column_of_name if 3 <= len(index.extension(s)) <= 200]
    out = []
    for _ in range(n):
        members = sorted(index.extension(rng.choice(sizable)))
        weights = {t: rng.uniform(0.5, 1.0) for t in rng.sample(members, min(len(members), rng.randint(3, 8)))}
        for t in rng.sample(range(index.n_vocab), width):
            weights.setdefault(t, rng.uniform(0.0, 0.3))
        out.append(weights)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=10_000)
    ap.add_argument("--calls", type=int, default=2_000)
    args = ap.parse_args()

    t0 = time.perf_counter()
    wn = load_wordnet()
    load_s = time.perf_counter() - t0
    vocab, source = vocabulary(args.words, wn)
    t0 = time.perf_counter()
    index = CategoryIndex(vocab, wn)
    build_s = time.perf_counter() - t0
    print(
        f"vocabulary: {len(vocab)} tokens from {source}; {index.n_words} map to WordNet, {index.n_categories} synsets"
    )
    print(f"load_wordnet: {load_s:.2f} s   CategoryIndex build: {build_s:.2f} s")
    rng = random.Random(1)
    cases = (("narrow (3-8 category words + 20 noise tokens)", 20), ("wide (+200 noise tokens)", 200))
    for label, width in cases:
        feats = features(index, args.calls, width, rng)
        index.propose(feats[0])  # warm the name and extension caches for a fair steady state
        t0 = time.perf_counter()
        for f in feats:
            index.propose(f, top_n=5)
        dt = time.perf_counter() - t0
        print(f"propose, {label}: {args.calls / dt:,.0f} calls/s ({1e3 * dt / args.calls:.2f} ms/call)")


if __name__ == "__main__":
    main()
