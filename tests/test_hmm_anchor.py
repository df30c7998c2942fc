import numpy as np
from scipy.optimize import linear_sum_assignment

from sae_translate.bench.hmm import HMMConfig, both_ways, make_data
from sae_translate.translator.hmm_anchor import FittedHMM, HMMAnchor, HMMFitConfig, fit_hmm_anchor, match_states


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
