import numpy as np
from scipy.optimize import linear_sum_assignment

from sae_translate.bench.hmm import HMMConfig, both_ways, make_data
from sae_translate.translator.hmm_anchor import (
    FittedHMM,
    HMMAnchor,
    HMMFitConfig,
    _baum_welch,
    _expected_counts,
    _random_start,
    fit_hmm_anchor,
    forward_backward,
    match_states,
    posteriors,
)


def _true_states(fitted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """For each fitted state, the true state whose emission row it is closest to (a one-to-one map)."""
    cost = np.abs(fitted[:, None] - true[None]).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


def test_hmm_anchor_matches_the_states_without_pairs_and_beats_the_per_symbol_lookup():
    # a small chain where reading the neighbours is worth several points over any per-symbol dictionary
    data = make_data(HMMConfig(states=4, vocab_a=6, vocab_b=8, sharpness=2.0, length=12, seed=1), 3000, 500)
    hmm = data.hmm
    anchor = fit_hmm_anchor(data.train_a, 6, data.train_b, 8, HMMFitConfig(states=4))
    true_a = _true_states(anchor.hmms[0].emission, hmm.emission_a)
    true_b = _true_states(anchor.hmms[1].emission, hmm.emission_b)
    # state k of a was matched to state perm[k] of b: both stand for the same true state
    assert (true_b[anchor.match.perm] == true_a).all()
    assert anchor.match.margin > 0
    lookup, ceiling = both_ways(data, hmm.lookup_translate), both_ways(data, hmm.ceiling_translate)
    accuracy = both_ways(data, lambda x, src, tgt: anchor.translate(x, "ab".index(src)))
    assert ceiling - lookup > 0.03
    assert accuracy > lookup + 0.5 * (ceiling - lookup), (accuracy, lookup, ceiling)
    # the fitted parameters survive a checkpoint round trip
    again = HMMAnchor.from_tensors(anchor.to_tensors())
    assert (again.translate(data.test_a, 0) == anchor.translate(data.test_a, 0)).all()


def test_state_match_finds_a_relabelled_chain_by_local_search_as_by_brute_force():
    # the same chain with its states relabelled: the match must undo the relabelling, by every
    # permutation (few states) or by local search (many)
    data = make_data(HMMConfig(states=7, vocab_a=9, vocab_b=9, seed=2), 10, 10)
    hmm = data.hmm
    relabel = np.random.default_rng(0).permutation(7)
    a = FittedHMM(hmm.transition, hmm.initial, hmm.emission_a, 0.0)
    inverse = np.argsort(relabel)  # state k of a is state inverse[k] of b
    b = FittedHMM(hmm.transition[relabel][:, relabel], hmm.initial[relabel], hmm.emission_b[relabel], 0.0)
    for brute in (8, 0):
        match = match_states(a, b, HMMFitConfig(brute_force_states=brute, match_starts=20))
        assert (match.perm == inverse).all() and match.discrepancy < 1e-12 < match.runner_up


def test_expected_counts_are_the_posteriors_summed_per_word_and_per_transition():
    # the E-step's accumulations (time-major, per-state bincounts) against the direct sums
    data = make_data(HMMConfig(states=5, vocab_a=9, vocab_b=9, length=7, seed=3), 1500, 10)
    hmm, x = data.hmm, data.train_a
    trans, words, first, ll = _expected_counts(x, hmm.transition, hmm.initial, hmm.emission_a)
    post = posteriors(x, FittedHMM(hmm.transition, hmm.initial, hmm.emission_a, 0.0))
    direct_words = np.einsum("nlv,nls->sv", np.eye(9)[x], post)
    assert np.allclose(words, direct_words) and np.allclose(first, post[:, 0].sum(0))
    alpha, beta, scale, emit = forward_backward(x, hmm.transition, hmm.initial, hmm.emission_a)
    pair = alpha[:, :-1, :, None] * hmm.transition * (emit[:, 1:] * beta[:, 1:] / scale[:, 1:, None])[:, :, None]
    assert np.allclose(trans, pair.sum((0, 1))) and np.isclose(ll, np.log(scale).sum())
    assert np.isclose(trans.sum(), x.shape[0] * (x.shape[1] - 1))  # one transition per adjacent pair


def test_over_relaxed_baum_welch_climbs_faster_than_plain_and_reports_a_likelihood_it_reaches():
    data = make_data(HMMConfig(states=6, vocab_a=12, vocab_b=12, seed=4), 2000, 10)
    x = data.train_a
    unigram = np.bincount(x.ravel(), minlength=12) + 1.0
    start = _random_start(12, 6, unigram / unigram.sum(), np.random.default_rng(0))
    plain = _baum_welch(x, start, 20, 0.0, growth=1.0)
    fast = _baum_welch(x, start, 20, 0.0, growth=1.5)
    longer = _baum_welch(x, start, 60, 0.0, growth=1.0)
    assert fast.log_likelihood > plain.log_likelihood, (fast.log_likelihood, plain.log_likelihood)
    for fit in (plain, fast, longer):
        # the parameters returned are at least as likely as the likelihood reported with them
        scored = _expected_counts(x, fit.transition, fit.initial, fit.emission)[3] / x.size
        assert scored >= fit.log_likelihood - 1e-9
        assert np.allclose(fit.transition.sum(1), 1) and np.allclose(fit.emission.sum(1), 1)
