"""A context-aware unsupervised anchor: one hidden Markov model per language, states matched without pairs.

1. Fit HMMs to each language's monolingual sentences (over-relaxed Baum-Welch, scaled
   forward-backward vectorised over sentences; many random restarts on a sample, the most likely
   few refined on all sentences; the pair of fits kept in step 2 is refined further).
2. If both languages describe one hidden process, their fitted chains agree up to a relabelling
   of the states: find the permutation that best aligns the two transition matrices and
   stationary distributions (every permutation for a few states; otherwise swap-based local
   search from many starts); of the refined fits, the pair of chains that agree best is kept. The
   gap between the best and the runner-up permutation says how sure the match is, without pairs.
3. Translate a sentence: state posteriors under the source HMM (forward-backward: the whole
   sentence is read), matched to the target's states, and the target word that the most probable
   states emit most (each state's most probable word, posteriors summed over states sharing it).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class HMMFitConfig:
    states: int = 8  # hidden states of each language's HMM
    restarts: int = 16  # random initialisations, each fitted on a small sample of the sentences
    restart_sentences: int = 2000  # the sample
    restart_iterations: int = 40  # Baum-Welch iterations at most per restart
    refine: int = 3  # the most likely restarts refined on a larger sample; the most likely result is kept
    # the larger sample: all sentences by default. At 12 states / 40 symbols EM still creeps up the
    # likelihood after hundreds of plain iterations, and the last thousandth of a nat per word decides
    # whether the chain is the true one (seed 0: 8,000 sentences and 60 plain iterations ended 0.004
    # nats / word below the true parameters, anchor 0.41 < lookup 0.46; all sentences and 100
    # over-relaxed iterations end above them, anchor 0.52 of a 0.55 ceiling)
    fit_sentences: int = 1_000_000
    iterations: int = 100  # Baum-Welch iterations at most in the refinement
    # further iterations at most for the pair of fits kept, before their states are matched again
    # (seed 4 at 12 / 40: its fit was still 0.0015 nats / word below the true parameters after the
    # refinement, anchor 0.37 < lookup 0.41; polished, 0.0004 above them, anchor 0.46)
    polish: int = 200
    tolerance: float = 1e-6  # stop when the mean log-likelihood per word improves less than this
    # over-relaxed EM: each update goes `step` times the EM step's way, the step multiplied by this
    # while the likelihood rises (1 = plain Baum-Welch); from the same start, 50 over-relaxed
    # iterations reach the likelihood of 300 plain ones (12 / 40, seed 0)
    growth: float = 1.5
    match_starts: int = 200  # local-search starts of the state match (above `brute_force_states`)
    brute_force_states: int = 8  # up to this many states every permutation is scored
    seed: int = 0


@dataclass
class FittedHMM:
    transition: np.ndarray  # [S, S]
    initial: np.ndarray  # [S]
    emission: np.ndarray  # [S, V]
    log_likelihood: float  # mean per word on the fitted sentences

    @property
    def stationary(self) -> np.ndarray:
        vals, vecs = np.linalg.eig(self.transition.T)
        p = np.abs(np.real(vecs[:, np.argmin(np.abs(vals - 1))]))
        return p / p.sum()


def _forward_backward_time_major(
    words: np.ndarray, transition: np.ndarray, initial: np.ndarray, emission_t: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scaled forward-backward over sentences stored time-major, words [L, n] (emission_t [V, S]):
    (alpha, beta, emission likelihoods) [L, n, S] and scales [L, n]. Each step reads and writes one
    contiguous [n, S] block (sentence-major slices are strided: about twice as slow)."""
    emit = emission_t[words]  # [L, n, S]
    length, n, s = emit.shape
    alpha, beta, scale = np.empty((length, n, s)), np.empty((length, n, s)), np.empty((length, n))
    a = initial[None] * emit[0]
    for t in range(length):
        if t > 0:
            a = (alpha[t - 1] @ transition) * emit[t]
        scale[t] = a.sum(1)
        alpha[t] = a / scale[t, :, None]
    beta[-1] = 1.0
    for t in range(length - 2, -1, -1):
        beta[t] = ((emit[t + 1] * beta[t + 1]) @ transition.T) / scale[t + 1, :, None]
    return alpha, beta, scale, emit


def forward_backward(
    sentences: np.ndarray, transition: np.ndarray, initial: np.ndarray, emission: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scaled forward-backward over sentences [n, L]: (alpha [n, L, S], beta [n, L, S], scales [n, L],
    emission likelihoods [n, L, S]). Posteriors are alpha * beta; log P(sentence) = sum log scales."""
    words = np.ascontiguousarray(np.asarray(sentences).T)
    alpha, beta, scale, emit = _forward_backward_time_major(
        words, transition, initial, np.ascontiguousarray(emission.T)
    )
    return alpha.transpose(1, 0, 2), beta.transpose(1, 0, 2), scale.T, emit.transpose(1, 0, 2)


def posteriors(sentences: np.ndarray, hmm: FittedHMM) -> np.ndarray:
    """State posteriors [n, L, S] of each position given its whole sentence."""
    alpha, beta, _, _ = forward_backward(sentences, hmm.transition, hmm.initial, hmm.emission)
    post = alpha * beta
    return post / post.sum(-1, keepdims=True)


CHUNK = 1024  # sentences per forward-backward pass: arrays that stay in cache run several times faster


def _expected_counts(
    sentences: np.ndarray, transition: np.ndarray, initial: np.ndarray, emission: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """E-step: expected (transitions [S, S], state-word emissions [S, V], first states [S]) and the
    total log-likelihood of the sentences."""
    s, vocab = emission.shape
    trans, words, first, ll = np.zeros((s, s)), np.zeros((vocab, s)), np.zeros(s), 0.0
    emission_t = np.ascontiguousarray(emission.T)
    for lo in range(0, len(sentences), CHUNK):
        chunk = np.ascontiguousarray(sentences[lo : lo + CHUNK].T)  # [L, n]
        alpha, beta, scale, emit = _forward_backward_time_major(chunk, transition, initial, emission_t)
        ll += float(np.log(scale).sum())
        gamma = (alpha * beta).reshape(-1, s)
        # alpha_t(i) T_ij e_t+1(j) beta_t+1(j) / scale_t+1, summed over sentences and t
        right = (emit[1:] * beta[1:] / scale[1:, :, None]).reshape(-1, s)
        trans += alpha[:-1].reshape(-1, s).T @ right
        flat = chunk.ravel()
        for k in range(s):  # posterior mass per word: a bincount per state (no [n * L, V] one-hot)
            words[:, k] += np.bincount(flat, gamma[:, k], vocab)
        first += gamma[: chunk.shape[1]].sum(0)
    return trans * transition, words.T, first, ll


def _extrapolate(old: np.ndarray, new: np.ndarray, step: float) -> np.ndarray:
    """Rows of probabilities moved `step` times as far as from `old` to `new` in log space (step 1:
    `new` itself), renormalised: stays on the simplex however long the step."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log = np.log(old) + step * (np.log(new) - np.log(old))
    log = np.where(new > 0, log, -np.inf)  # an entry that EM sets to zero stays zero
    p = np.exp(log - log.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def _baum_welch(
    sentences: np.ndarray, hmm: FittedHMM, iterations: int, tolerance: float, growth: float = 1.0
) -> FittedHMM:
    """Baum-Welch, over-relaxed when growth > 1 (adaptive over-relaxed EM, Salakhutdinov & Roweis
    2003): each update goes `step` times the EM step's way, the step growing by `growth` while the
    likelihood rises; when it falls the plain EM update of the last good parameters is taken and the
    step starts again at 1. Where EM creeps along a ridge (diffuse emissions, many states) it needs
    several times fewer E-steps to the same likelihood."""
    params = (hmm.transition, hmm.initial, hmm.emission)
    previous, step, fallback, extrapolated = -math.inf, 1.0, params, False
    for _ in range(iterations):
        trans, words, first, total = _expected_counts(sentences, *params)
        ll = total / sentences.size  # of the parameters before this update
        if extrapolated and ll < previous:  # the extrapolation overshot: back to the plain EM update
            params, step, extrapolated = fallback, 1.0, False
            continue
        em = (
            trans / trans.sum(1, keepdims=True),
            first / first.sum(),
            (words + 1e-6) / (words + 1e-6).sum(1, keepdims=True),
        )
        converged = ll - previous < tolerance
        previous, fallback = ll, em
        if converged:
            break
        extrapolated = step > 1.0
        if extrapolated:
            params = (_extrapolate(params[0], em[0], step), em[1], _extrapolate(params[2], em[2], step))
        else:
            params = em
        step *= growth
    # the EM update of the last parameters scored, with their likelihood (the update's is at least that)
    return FittedHMM(*fallback, previous)


def _random_start(vocab: int, states: int, unigram: np.ndarray, rng: np.random.Generator) -> FittedHMM:
    """Each state starts on its own word (drawn by frequency), its emission half that word, half the
    word frequencies; transitions random. Starts spread over the ways of giving states distinct words."""
    homes = rng.choice(vocab, size=states, replace=False, p=unigram)
    emission = 0.5 * np.eye(vocab)[homes] + 0.5 * unigram[None]
    transition = rng.dirichlet(np.ones(states), size=states)
    return FittedHMM(transition, np.full(states, 1 / states), emission, -math.inf)


def _sample(sentences: np.ndarray, cfg: HMMFitConfig) -> np.ndarray:
    """The refinement's sentences: the first `fit_sentences` of a fixed shuffle."""
    return sentences[np.random.default_rng(cfg.seed).permutation(len(sentences))[: cfg.fit_sentences]]


def fit_hmm_candidates(sentences: np.ndarray, vocab: int, cfg: HMMFitConfig | None = None) -> list[FittedHMM]:
    """Baum-Welch from many random starts, each run for a few iterations on a small sample of the
    sentences (cheap: local optima show early); the most likely few are refined on a larger sample
    and returned, most likely first."""
    cfg = cfg or HMMFitConfig()
    rng = np.random.default_rng(cfg.seed)
    unigram = np.bincount(sentences.ravel(), minlength=vocab) + 1.0
    unigram = unigram / unigram.sum()
    order = rng.permutation(len(sentences))
    sample, larger = sentences[order[: cfg.restart_sentences]], _sample(sentences, cfg)
    starts = [
        _baum_welch(
            sample,
            _random_start(vocab, cfg.states, unigram, rng),
            cfg.restart_iterations,
            cfg.tolerance,
            cfg.growth,
        )
        for _ in range(cfg.restarts)
    ]
    starts.sort(key=lambda f: -f.log_likelihood)
    refined = [_baum_welch(larger, start, cfg.iterations, cfg.tolerance, cfg.growth) for start in starts[: cfg.refine]]
    return sorted(refined, key=lambda f: -f.log_likelihood)


def _discrepancy(ta: np.ndarray, pa: np.ndarray, tb: np.ndarray, pb: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Squared distance of chain a from chain b relabelled by each permutation [P, S] (state k of a is
    state perm[k] of b): transition entries plus stationary probabilities."""
    tp = tb[perms[:, :, None], perms[:, None, :]]  # [P, S, S]
    return ((tp - ta[None]) ** 2).sum((1, 2)) + ((pb[perms] - pa[None]) ** 2).sum(1)


def _local_search(ta, pa, tb, pb, perm: np.ndarray) -> tuple[np.ndarray, float]:
    """Swap pairs of assignments while any swap lowers the discrepancy (all swaps scored at once)."""
    s = len(perm)
    pairs = np.array(list(itertools.combinations(range(s), 2)))
    cost = float(_discrepancy(ta, pa, tb, pb, perm[None])[0])
    while True:
        swapped = np.repeat(perm[None], len(pairs), 0)
        rows = np.arange(len(pairs))
        swapped[rows, pairs[:, 0]], swapped[rows, pairs[:, 1]] = perm[pairs[:, 1]], perm[pairs[:, 0]]
        costs = _discrepancy(ta, pa, tb, pb, swapped)
        best = int(costs.argmin())
        if costs[best] >= cost - 1e-12:
            return perm, cost
        perm, cost = swapped[best], float(costs[best])


@dataclass
class StateMatch:
    """Which state of b each state of a is, and how sure: the discrepancy of the kept permutation and
    of the best different one (a runner-up far above the best says the chains pin the match down)."""

    perm: np.ndarray  # [S]: state k of a is state perm[k] of b
    discrepancy: float
    runner_up: float  # inf when no other permutation was scored

    @property
    def margin(self) -> float:
        return self.runner_up - self.discrepancy


def match_states(a: FittedHMM, b: FittedHMM, cfg: HMMFitConfig | None = None) -> StateMatch:
    """The relabelling of b's states that best aligns its chain with a's; no pairs are read."""
    cfg = cfg or HMMFitConfig()
    ta, tb, pa, pb = a.transition, b.transition, a.stationary, b.stationary
    s = len(ta)
    if s <= cfg.brute_force_states:
        perms = np.array(list(itertools.permutations(range(s))))
        costs = np.concatenate([_discrepancy(ta, pa, tb, pb, chunk) for chunk in np.array_split(perms, 8)])
        order = np.argsort(costs)[:2]
        runner = float(costs[order[1]]) if len(order) > 1 else math.inf
        return StateMatch(perms[order[0]], float(costs[order[0]]), runner)
    rng = np.random.default_rng(cfg.seed)
    # first start: states paired by rank of stationary probability; the rest random
    starts = [np.argsort(pb)[np.argsort(np.argsort(pa))]] + [rng.permutation(s) for _ in range(cfg.match_starts - 1)]
    found: dict[tuple[int, ...], float] = {}
    for start in starts:
        perm, cost = _local_search(ta, pa, tb, pb, start)
        found[tuple(perm.tolist())] = cost
    ranked = sorted(found.items(), key=lambda kv: kv[1])
    runner = ranked[1][1] if len(ranked) > 1 else math.inf
    return StateMatch(np.array(ranked[0][0]), ranked[0][1], runner)


def _decode(post: np.ndarray, emission: np.ndarray, to_target: np.ndarray) -> np.ndarray:
    """Posteriors [n, L, S] over source states -> the target word the most posterior mass emits most:
    each state votes for its most probable target word (states sharing one pool their mass)."""
    home = emission.argmax(1)[to_target]  # each source state's word in the target
    per_word = np.zeros((*post.shape[:2], emission.shape[1]))
    for k, w in enumerate(home):
        per_word[..., w] += post[..., k]
    return per_word.argmax(-1)


@dataclass
class HMMAnchor:
    """Two fitted HMMs and their state match: a sentence translator that reads context."""

    hmms: tuple[FittedHMM, FittedHMM]
    match: StateMatch

    def translate(self, sentences: np.ndarray, lang: int) -> np.ndarray:
        """Sentences [n, L] of language `lang` -> word ids [n, L] of the other language."""
        # state k of the source is state to_target[k] of the target
        to_target = self.match.perm if lang == 0 else np.argsort(self.match.perm)
        return _decode(posteriors(sentences, self.hmms[lang]), self.hmms[1 - lang].emission, to_target)

    def clean(self, sentences: np.ndarray, lang: int) -> np.ndarray:
        """Sentences of language `lang` decoded into their own language the same way: what the
        anchor's translations into this language look like (most probable words of the states)."""
        hmm = self.hmms[lang]
        return _decode(posteriors(sentences, hmm), hmm.emission, np.arange(len(hmm.transition)))

    def to_tensors(self) -> dict[str, Tensor]:
        out = {"hmm_match": torch.from_numpy(self.match.perm.copy())}
        for lang, hmm in zip("ab", self.hmms):
            out |= {
                f"hmm_transition_{lang}": torch.from_numpy(hmm.transition.copy()),
                f"hmm_initial_{lang}": torch.from_numpy(hmm.initial.copy()),
                f"hmm_emission_{lang}": torch.from_numpy(hmm.emission.copy()),
                f"hmm_log_likelihood_{lang}": torch.tensor(hmm.log_likelihood, dtype=torch.float64),
            }
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], discrepancy: float = math.nan, runner_up: float = math.nan):
        hmms = tuple(
            FittedHMM(
                tensors[f"hmm_transition_{lang}"].numpy(),
                tensors[f"hmm_initial_{lang}"].numpy(),
                tensors[f"hmm_emission_{lang}"].numpy(),
                float(tensors[f"hmm_log_likelihood_{lang}"]),
            )
            for lang in "ab"
        )
        return cls((hmms[0], hmms[1]), StateMatch(tensors["hmm_match"].numpy(), discrepancy, runner_up))

    def report(self) -> dict:
        return {
            "states": int(len(self.match.perm)),
            "log_likelihood_a": self.hmms[0].log_likelihood,
            "log_likelihood_b": self.hmms[1].log_likelihood,
            "match_discrepancy": self.match.discrepancy,
            "match_runner_up": self.match.runner_up,
        }


def fit_hmm_anchor(
    sentences_a: np.ndarray, vocab_a: int, sentences_b: np.ndarray, vocab_b: int, cfg: HMMFitConfig | None = None
) -> HMMAnchor:
    """Fit HMMs to each language (monolingual sentences only) and match their states. Of the refined
    fits of each language, the pair whose chains agree best is kept: both languages are emitted by
    one chain, so a fit stuck in a poor local optimum shows as a chain the other language's fits do
    not share (a likelihood gap of a thousandth per word can hide a wrong chain)."""
    cfg = cfg or HMMFitConfig()
    fits_a, fits_b = fit_hmm_candidates(sentences_a, vocab_a, cfg), fit_hmm_candidates(sentences_b, vocab_b, cfg)
    pairs = [(a, b, match_states(a, b, cfg)) for a in fits_a for b in fits_b]
    a, b, match = min(pairs, key=lambda p: p[2].discrepancy)
    if cfg.polish > 0:
        a = _baum_welch(_sample(sentences_a, cfg), a, cfg.polish, cfg.tolerance, cfg.growth)
        b = _baum_welch(_sample(sentences_b, cfg), b, cfg.polish, cfg.tolerance, cfg.growth)
        match = match_states(a, b, cfg)
    return HMMAnchor((a, b), match)
