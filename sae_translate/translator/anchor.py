"""Unsupervised word-by-word anchor: align two vocabularies without any pairs.

1. Embed each language's words from its own co-occurrence statistics: left singular vectors of
   the normalised co-occurrence matrices (successors and predecessors, several offsets). Both
   languages describe one hidden process, so their embeddings agree up to an orthogonal map.
2. Find that map by distribution matching (Wasserstein-Procrustes: optimal transport between
   the frequency-weighted point clouds alternating with orthogonal Procrustes), started from
   every sign pattern of the leading components (singular vectors are defined up to sign).
3. Refine several distinct starting maps (the best-ranked sign patterns whose transport plans
   pair the words differently) by matching sequence structure (Gromov-Wasserstein on the PMI
   matrices of each language) and keep the plan with the lowest structure discrepancy. A wrong
   dictionary round-trips as well as a right one, but it pairs words whose neighbourhoods differ,
   so the discrepancy tells them apart; trying many distinct starts is what makes the right one
   reachable on every seed (a single start locks onto a wrong map on some chains).
4. The plan's rows give a soft dictionary for the most frequent words; the rest map to their
   nearest neighbour (CSLS) under the Procrustes map fitted to the plan.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor


@dataclass
class AnchorConfig:
    dim: int = 8  # embedding components; the sign search tries 2**dim patterns
    offsets: tuple[int, ...] = (1, 2)
    top_words: int = 512  # the structure match runs on the most frequent words of each language
    search_words: int = 128  # the sign search ranks patterns on this many words (speed)
    scan: int = 64  # best-ranked sign patterns mapped on the full cloud, looking for distinct plans
    candidates: int = 24  # distinct starting maps refined by the structure match (several initialisations)
    procrustes_iters: int = 10
    structure_iters: int = 60
    entropy: float = 0.02  # Sinkhorn regularisation, relative to the mean cost
    keep: int = 4  # dictionary translations kept per word


@dataclass
class WordDictionary:
    """Soft word-by-word translation: for each word of language l, candidate words of 1 - l."""

    ids: tuple[Tensor, Tensor]  # [V_l, keep] language-local word ids in the other language
    probs: tuple[Tensor, Tensor]  # [V_l, keep], rows sum to 1

    def best(self, lang: int) -> Tensor:
        return self.ids[lang][:, 0]

    def sample(self, words: Tensor, lang: int, generator: torch.Generator | None = None) -> Tensor:
        """Word ids [B, L] of language `lang` -> sampled word ids of the other language."""
        probs = self.probs[lang].to(words.device)[words]  # [B, L, keep]
        pick = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(words.shape)
        return self.ids[lang].to(words.device)[words].gather(-1, pick[..., None]).squeeze(-1)

    def to_tensors(self) -> dict[str, Tensor]:
        return {
            "dict_ids_a": self.ids[0],
            "dict_ids_b": self.ids[1],
            "dict_probs_a": self.probs[0],
            "dict_probs_b": self.probs[1],
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> WordDictionary:
        return cls((tensors["dict_ids_a"], tensors["dict_ids_b"]), (tensors["dict_probs_a"], tensors["dict_probs_b"]))


def cooccurrence(sentences: np.ndarray, vocab: int, offset: int) -> sp.csr_matrix:
    """Counts of (word at t, word at t + offset), [vocab, vocab] sparse."""
    left, right = sentences[:, :-offset].ravel(), sentences[:, offset:].ravel()
    data = np.ones(left.shape[0], dtype=np.float64)
    return sp.csr_matrix((data, (left, right)), shape=(vocab, vocab))


def word_embeddings(sentences: np.ndarray, vocab: int, cfg: AnchorConfig) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings [vocab, dim], frequency [vocab]) from normalised co-occurrence, no pairs needed."""
    freq = np.bincount(sentences.ravel(), minlength=vocab).astype(np.float64)
    freq = (freq + 1e-3) / (freq + 1e-3).sum()
    blocks = []
    for offset in cfg.offsets:
        counts = cooccurrence(sentences, vocab, offset)
        rows = np.asarray(counts.sum(1)).ravel() + 1e-3
        cols = np.asarray(counts.sum(0)).ravel() + 1e-3
        norm = sp.diags(rows**-0.5) @ counts @ sp.diags(cols**-0.5)
        blocks += [norm, norm.T]
    stacked = sp.hstack(blocks).tocsr() / np.sqrt(len(blocks))
    k = min(cfg.dim + 1, vocab - 1)
    if vocab <= 2000:
        u, s, _ = np.linalg.svd(stacked.toarray(), full_matrices=False)
    else:
        u, s, _ = sp.linalg.svds(stacked, k=k)
        order = np.argsort(-s)
        u, s = u[:, order], s[order]
    # the leading component is the trivial sqrt(frequency) direction
    u, s = u[:, 1:k], s[1:k]
    return u * s / np.sqrt(freq)[:, None], freq


def _sinkhorn(p: Tensor, q: Tensor, cost: Tensor, eps: float, iters: int = 100) -> Tensor:
    """Entropic optimal transport plan with marginals p, q (log domain)."""
    log_p, log_q = p.log(), q.log()
    f, g = torch.zeros_like(p), torch.zeros_like(q)
    for _ in range(iters):
        f = eps * (log_p - torch.logsumexp((g[None] - cost) / eps, dim=1))
        g = eps * (log_q - torch.logsumexp((f[:, None] - cost) / eps, dim=0))
    return ((f[:, None] + g[None] - cost) / eps).exp()


def _plan(xa: Tensor, pa: Tensor, xb: Tensor, pb: Tensor, rot: Tensor, entropy: float) -> tuple[Tensor, Tensor]:
    cost = torch.cdist(xa @ rot, xb).pow(2)
    plan = _sinkhorn(pa, pb, cost, entropy * cost.mean().item())
    return plan, cost


def _procrustes(xa: Tensor, xb: Tensor, plan: Tensor) -> Tensor:
    u, _, vt = torch.linalg.svd(xa.T @ plan @ xb)
    return u @ vt


def wasserstein_procrustes(
    xa: Tensor, pa: Tensor, xb: Tensor, pb: Tensor, rot: Tensor, iters: int, entropy: float
) -> tuple[Tensor, float]:
    """Alternate transport plan and orthogonal map; returns (map, transport cost)."""
    for _ in range(iters):
        plan, _ = _plan(xa, pa, xb, pb, rot, entropy)
        rot = _procrustes(xa, xb, plan)
    plan, cost = _plan(xa, pa, xb, pb, rot, entropy)
    return rot, float((plan * cost).sum())


def _pmi(sentences: np.ndarray, words: np.ndarray, vocab: int, offsets: tuple[int, ...]) -> list[Tensor]:
    """PMI matrices (both orientations) restricted to `words`, clipped to [-3, 3]."""
    out = []
    for offset in offsets:
        counts = cooccurrence(sentences, vocab, offset)[words][:, words].toarray() + 1e-2
        joint = counts / counts.sum()
        pmi = np.log(joint / np.outer(joint.sum(1), joint.sum(0))).clip(-3, 3)
        out += [torch.from_numpy(pmi), torch.from_numpy(pmi.T.copy())]
    return out


def structure_match(
    plan: Tensor, pmi_a: list[Tensor], pmi_b: list[Tensor], iters: int, entropy: float
) -> tuple[Tensor, float]:
    """Gromov-Wasserstein refinement: couple words whose sequence neighbourhoods correspond."""
    p, q = plan.sum(1), plan.sum(0)
    const = sum((ca.pow(2) @ p)[:, None] + (cb.pow(2) @ q)[None] for ca, cb in zip(pmi_a, pmi_b))
    grad = lambda t: const - 2 * sum(ca @ t @ cb.T for ca, cb in zip(pmi_a, pmi_b))  # noqa: E731
    for _ in range(iters):
        g = grad(plan)
        plan = 0.5 * plan + 0.5 * _sinkhorn(p, q, g, entropy * g.abs().mean().item())
    return plan, float((grad(plan) * plan).sum())


def csls(xa: Tensor, xb: Tensor, k: int = 3) -> Tensor:
    """CSLS similarities [Va, Vb]: cosine corrected for hubness (MUSE). Dense: small vocabularies
    only; `csls_nearest` finds the nearest neighbours without the matrix."""
    xa = torch.nn.functional.normalize(xa, dim=1)
    xb = torch.nn.functional.normalize(xb, dim=1)
    sim = xa @ xb.T
    ra = sim.topk(min(k, sim.shape[1]), dim=1).values.mean(1)
    rb = sim.topk(min(k, sim.shape[0]), dim=0).values.mean(0)
    return 2 * sim - ra[:, None] - rb[None]


CSLS_BLOCK = 2**21  # similarities held at once (16 MiB in float64: blocks that stay in cache run faster)


def _by_blocks(x: Tensor, y: Tensor, block: int):
    """(start, x[start:end] @ y.T) over blocks of rows of x, each at most `block` similarities."""
    rows = max(1, block // max(1, len(y)))
    for lo in range(0, len(x), rows):
        yield lo, x[lo : lo + rows] @ y.T


def csls_nearest(xa: Tensor, xb: Tensor, k: int = 3, block: int = CSLS_BLOCK) -> tuple[Tensor, Tensor]:
    """(nearest b of each a [Va], nearest a of each b [Vb]) under CSLS, computed by blocks of rows
    of the similarity matrix and of its transpose (rows: contiguous top-k and argmax): memory grows
    with Va + Vb, not Va x Vb."""
    xa = torch.nn.functional.normalize(xa, dim=1)
    xb = torch.nn.functional.normalize(xb, dim=1)
    ra, rb = torch.empty(len(xa), dtype=xa.dtype), torch.empty(len(xb), dtype=xb.dtype)
    for x, y, r in ((xa, xb, ra), (xb, xa, rb)):  # each word's mean similarity to its k nearest neighbours
        for lo, sim in _by_blocks(x, y, block):
            r[lo : lo + len(sim)] = sim.topk(min(k, len(y)), dim=1).values.mean(1)
    nearest = []
    for x, y, rx, ry in ((xa, xb, ra, rb), (xb, xa, rb, ra)):
        out = torch.empty(len(x), dtype=torch.long)
        for lo, sim in _by_blocks(x, y, block):
            out[lo : lo + len(sim)] = sim.mul_(2).sub_(rx[lo : lo + len(sim), None]).sub_(ry[None]).argmax(1)
        nearest.append(out)
    return nearest[0], nearest[1]


def _dictionary_side(
    plan_rows: Tensor, top_src: np.ndarray, top_tgt: np.ndarray, nearest: Tensor, vocab_src: int, keep: int
) -> tuple[Tensor, Tensor]:
    """Rows of the plan for frequent words, CSLS nearest neighbour for the rest."""
    ids = nearest[:, None].repeat(1, keep)
    probs = torch.zeros(vocab_src, keep, dtype=torch.float32)
    probs[:, 0] = 1.0
    k = min(keep, plan_rows.shape[1])
    top_p, top_i = (plan_rows / plan_rows.sum(1, keepdim=True)).topk(k, dim=1)
    ids[torch.from_numpy(top_src), :k] = torch.from_numpy(top_tgt)[top_i]
    probs[torch.from_numpy(top_src)] = 0.0
    probs[torch.from_numpy(top_src), :k] = (top_p / top_p.sum(1, keepdim=True)).float()
    return ids, probs


@dataclass
class AnchorReport:
    """How the dictionary was chosen, without pairs: the structure discrepancy of the kept plan and
    of the best plan that pairs the words differently (a small margin flags an uncertain choice)."""

    discrepancy: float
    runner_up: float  # inf when every start led to the same pairing
    distinct_starts: int

    @property
    def margin(self) -> float:
        return self.runner_up - self.discrepancy


def induce_dictionary(
    sentences_a: np.ndarray,
    vocab_a: int,
    sentences_b: np.ndarray,
    vocab_b: int,
    cfg: AnchorConfig | None = None,
) -> tuple[WordDictionary, AnchorReport]:
    """A soft word-by-word dictionary between two languages from monolingual sentences only, and
    the unsupervised evidence it was chosen on."""
    cfg = cfg or AnchorConfig()
    np_a, freq_a = word_embeddings(sentences_a, vocab_a, cfg)
    np_b, freq_b = word_embeddings(sentences_b, vocab_b, cfg)
    dim = min(np_a.shape[1], np_b.shape[1])
    emb_a, emb_b = torch.from_numpy(np_a[:, :dim]), torch.from_numpy(np_b[:, :dim])

    def top(freq: np.ndarray, n: int) -> np.ndarray:
        return np.sort(np.argsort(-freq)[:n])

    def cloud(emb: Tensor, freq: np.ndarray, words: np.ndarray) -> tuple[Tensor, Tensor]:
        w = torch.from_numpy(freq[words])
        return emb[torch.from_numpy(words)], w / w.sum()

    # rank every sign pattern on a small cloud of frequent words
    sa, sb = top(freq_a, cfg.search_words), top(freq_b, cfg.search_words)
    xa, pa = cloud(emb_a, freq_a, sa)
    xb, pb = cloud(emb_b, freq_b, sb)
    ranked = []
    for signs in itertools.product((1.0, -1.0), repeat=dim):
        rot, cost = wasserstein_procrustes(
            xa, pa, xb, pb, torch.diag(torch.tensor(signs, dtype=torch.float64)), 3, cfg.entropy
        )
        ranked.append((cost, rot))
    ranked.sort(key=lambda c: c[0])

    # map the best-ranked patterns on the larger cloud; keep those whose plans pair words differently
    ta, tb = top(freq_a, cfg.top_words), top(freq_b, cfg.top_words)
    xa, pa = cloud(emb_a, freq_a, ta)
    xb, pb = cloud(emb_b, freq_b, tb)
    starts: dict[tuple[int, ...], Tensor] = {}
    for _, rot in ranked[: max(cfg.scan, cfg.candidates)]:
        rot, _ = wasserstein_procrustes(xa, pa, xb, pb, rot, cfg.procrustes_iters, cfg.entropy)
        plan, _ = _plan(xa, pa, xb, pb, rot, cfg.entropy)
        starts.setdefault(tuple(plan.argmax(1).tolist()), plan)
        if len(starts) == cfg.candidates:
            break

    # refine each distinct start by sequence structure; the lowest discrepancy wins
    pmi_a = _pmi(sentences_a, ta, vocab_a, cfg.offsets)
    pmi_b = _pmi(sentences_b, tb, vocab_b, cfg.offsets)
    refined = sorted(
        (structure_match(plan, pmi_a, pmi_b, cfg.structure_iters, cfg.entropy)[::-1] for plan in starts.values()),
        key=lambda c: c[0],
    )
    discrepancy, plan = refined[0]
    pairing = plan.argmax(1)
    runner_up = next((d for d, p in refined[1:] if not torch.equal(p.argmax(1), pairing)), float("inf"))

    rot = _procrustes(xa, xb, plan)
    nearest_a, nearest_b = csls_nearest(emb_a @ rot, emb_b)
    ids_a, probs_a = _dictionary_side(plan, ta, tb, nearest_a, vocab_a, cfg.keep)
    ids_b, probs_b = _dictionary_side(plan.T, tb, ta, nearest_b, vocab_b, cfg.keep)
    report = AnchorReport(discrepancy, runner_up, len(starts))
    return WordDictionary((ids_a, ids_b), (probs_a, probs_b)), report


def align_vocabularies(
    sentences_a: np.ndarray,
    vocab_a: int,
    sentences_b: np.ndarray,
    vocab_b: int,
    cfg: AnchorConfig | None = None,
) -> WordDictionary:
    """A soft word-by-word dictionary between two languages from monolingual sentences only."""
    return induce_dictionary(sentences_a, vocab_a, sentences_b, vocab_b, cfg)[0]
