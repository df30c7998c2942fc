import itertools
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sae_translate.bench.hmm import (
    BenchConfig,
    HMMConfig,
    both_ways,
    counterpart_accuracy,
    gap_closed,
    make_data,
    make_hmm,
)
from sae_translate.errors import UserError
from sae_translate.translator.anchor import induce_dictionary


def test_chain_and_emissions_are_distributions_with_distinct_home_symbols():
    hmm = make_hmm(HMMConfig(states=5, vocab_a=7, vocab_b=9, seed=3))
    assert np.allclose(hmm.transition.sum(1), 1)
    assert np.allclose(hmm.emission_a.sum(1), 1) and np.allclose(hmm.emission_b.sum(1), 1)
    assert np.allclose(hmm.initial @ hmm.transition, hmm.initial)  # stationary
    for lang in "ab":
        assert len(set(hmm.home_symbols(lang).tolist())) == 5


def test_sampled_paths_and_symbols_follow_the_chain():
    hmm = make_hmm(HMMConfig(states=3, vocab_a=4, vocab_b=5, seed=1))
    rng = np.random.default_rng(0)
    paths = hmm.sample_states(4000, 20, rng)
    counts = np.zeros((3, 3))
    np.add.at(counts, (paths[:, :-1].ravel(), paths[:, 1:].ravel()), 1)
    assert np.abs(counts / counts.sum(1, keepdims=True) - hmm.transition).max() < 0.02
    symbols = hmm.emit(paths, "b", rng)
    emitted = np.zeros((3, 5))
    np.add.at(emitted, (paths.ravel(), symbols.ravel()), 1)
    assert np.abs(emitted / emitted.sum(1, keepdims=True) - hmm.emission_b).max() < 0.02


def test_forward_backward_matches_enumeration_of_all_paths():
    hmm = make_hmm(HMMConfig(states=3, vocab_a=3, vocab_b=4, sharpness=1.0, seed=2))
    symbols = np.array([[0, 2, 1, 1], [2, 2, 0, 1]])
    post = hmm.posterior(symbols, "a")
    for row, sent in enumerate(symbols):
        brute = np.zeros((4, 3))
        for path in itertools.product(range(3), repeat=4):
            p = hmm.initial[path[0]] * hmm.emission_a[path[0], sent[0]]
            for t in range(1, 4):
                p *= hmm.transition[path[t - 1], path[t]] * hmm.emission_a[path[t], sent[t]]
            brute[np.arange(4), path] += p
        assert np.allclose(post[row], brute / brute.sum(1, keepdims=True))


def test_ceiling_beats_word_by_word_guessing_and_parallel_pairs_share_states():
    cfg = HMMConfig(states=6, vocab_a=8, vocab_b=10, sharpness=3.0, seed=0)
    data = make_data(cfg, n_train=50, n_test=400)
    hmm = data.hmm
    ceiling = counterpart_accuracy(hmm, data.test_states, hmm.ceiling_translate(data.test_a, "a", "b"), "b")
    # a decoder blind to context: each symbol's most likely state by Bayes on the stationary prior
    prior_post = hmm.emission_a * hmm.initial[:, None]
    blind = hmm.home_symbols("b")[prior_post.argmax(0)[data.test_a]]
    assert ceiling > counterpart_accuracy(hmm, data.test_states, blind, "b")
    assert data.test_a.shape == data.test_b.shape == data.test_states.shape == (400, cfg.length)
    # the emitted symbols agree with the shared states more often than with a shuffled path
    home_b = hmm.home_symbols("b")
    assert (data.test_b == home_b[data.test_states]).mean() > 2 * (data.test_b == home_b[data.test_states[::-1]]).mean()


def test_lookup_is_the_best_per_symbol_map_and_the_ceiling_beats_it_at_the_default_sharpness():
    data = make_data(HMMConfig(seed=1), n_train=50, n_test=3000)
    hmm, states = data.hmm, data.test_states
    # the empirical best map: for each symbol, the home symbol it most often stands for
    home_b = hmm.home_symbols("b")[states]
    counts = np.zeros((hmm.emission_a.shape[1], hmm.emission_b.shape[1]))
    np.add.at(counts, (data.test_a.ravel(), home_b.ravel()), 1)
    empirical = counterpart_accuracy(hmm, states, counts.argmax(1)[data.test_a], "b")
    lookup = counterpart_accuracy(hmm, states, hmm.lookup_translate(data.test_a, "a", "b"), "b")
    assert lookup == pytest.approx(empirical, abs=0.02)
    lookup, ceiling = both_ways(data, hmm.lookup_translate), both_ways(data, hmm.ceiling_translate)
    assert ceiling - lookup > 0.05  # the default is a chain where reading the neighbours matters
    assert gap_closed(lookup, lookup, ceiling) == 0 and gap_closed(ceiling, lookup, ceiling) == pytest.approx(1)


def test_anchor_finds_the_dictionary_on_a_chain_where_a_single_start_locked_onto_a_wrong_one():
    # seed 9 at the defaults: the best-ranked start leads to a consistent but wrong pairing (accuracy
    # ~0.08) whose round trip is as good as the right one's; the structure discrepancy picks right
    torch.set_num_threads(1)
    data = make_data(HMMConfig(seed=9), n_train=20000, n_test=500)
    dictionary, report = induce_dictionary(data.train_a, 12, data.train_b, 16)
    words = (dictionary.best(0).numpy(), dictionary.best(1).numpy())
    anchor = both_ways(data, lambda x, src, tgt: words["ab".index(src)][x])
    lookup = both_ways(data, data.hmm.lookup_translate)
    assert anchor > 0.8 * lookup
    assert report.distinct_starts > 1 and report.margin > 0


def test_bigram_statistics_tell_a_right_mapping_from_a_consistently_wrong_one():
    from sae_translate.translator.train import _bigram_kl

    data = make_data(HMMConfig(seed=0), n_train=4000, n_test=10)
    hmm, rng = data.hmm, np.random.default_rng(0)
    # translate a -> b by sampling each symbol's counterpart from the joint emission (no context)
    joint = hmm.emission_a.T @ (hmm.initial[:, None] * hmm.emission_b)  # [Va, Vb] up to row scale
    right = joint / joint.sum(1, keepdims=True)
    wrong = right[:, rng.permutation(right.shape[1])]  # a consistent mapping: it round-trips just as well
    sample = lambda table: torch.as_tensor(
        (
            rng.random(data.train_a.shape)[..., None]  # noqa: E731
            > table.cumsum(1)[data.train_a]
        )
        .sum(-1)
        .clip(max=table.shape[1] - 1)
    )
    real_b = torch.as_tensor(data.train_b)
    assert _bigram_kl(real_b, sample(right), 16) < 0.5 * _bigram_kl(real_b, sample(wrong), 16)


def test_invalid_settings_are_user_errors():
    with pytest.raises(UserError):
        make_hmm(HMMConfig(states=8, vocab_a=4))
    with pytest.raises(UserError):
        make_hmm(HMMConfig(states=1))


def test_bench_hmm_command_takes_its_defaults_from_the_benchmark_config():
    from dataclasses import asdict

    from sae_translate.cli import app

    result = CliRunner().invoke(app, ["bench", "hmm", "--defaults", "--json"])
    assert result.exit_code == 0, result.output
    printed, own = json.loads(result.output), asdict(BenchConfig())
    assert printed["hmm"] == own["hmm"]
    assert {k: v for k, v in printed.items() if k != "translator"} == {
        k: v for k, v in own.items() if k != "translator"
    }
    assert printed["translator"] | {"progress": True} == own["translator"] | {"progress": True}


@pytest.mark.slow
def test_bench_hmm_command_translates_well_above_chance(tmp_path):
    from sae_translate.cli import app

    torch.set_num_threads(1)
    args = [
        "bench",
        "hmm",
        "--json",
        "--states",
        "4",
        "--vocab-a",
        "6",
        "--vocab-b",
        "8",
        "--sharpness",
        "6",
        "--steps",
        "150",
        "--train-sentences",
        "3000",
        "--test-sentences",
        "200",
        "--no-aligned",
        "--out",
        str(tmp_path / "bench"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    for key in (
        "accuracy",
        "steps",
        "seconds",
        "device",
        "ceiling",
        "share_of_ceiling",
        "lookup",
        "gap_closed",
        "word_by_word_accuracy",
    ):
        assert key in report
    assert report["steps"] == 150
    assert report["accuracy"] > 0.6  # chance is about 1/6
    assert (tmp_path / "bench" / "unsupervised" / "log.jsonl").exists()


def test_unsupervised_translator_beats_its_word_by_word_anchor_where_context_matters(tmp_path):
    from dataclasses import replace

    from sae_translate.bench.hmm import BenchConfig, run_benchmark

    torch.set_num_threads(1)
    cfg = BenchConfig(
        hmm=HMMConfig(states=4, vocab_a=6, vocab_b=8, sharpness=2.0, length=12, seed=0),
        n_train=3000,
        n_test=300,
        aligned=False,
        out_dir=str(tmp_path),
    )
    cfg = replace(cfg, translator=replace(cfg.translator, steps=200, eval_every=50, progress=False))
    report = run_benchmark(cfg)
    assert report["ceiling"] - report["lookup"] > 0.03  # context is worth something on this chain
    assert report["accuracy"] > report["word_by_word_accuracy"], report


def test_aligned_translator_reads_context_beyond_the_per_symbol_lookup(tmp_path):
    """On true pairs the bidirectional encoder learns P(b | whole a): above the best context-free
    dictionary (which knows the HMM), on a small chain where context is worth 13 points."""
    from dataclasses import replace

    from sae_translate.bench.hmm import BenchConfig, run_benchmark

    torch.set_num_threads(1)
    cfg = BenchConfig(
        hmm=HMMConfig(states=4, vocab_a=6, vocab_b=8, sharpness=2.0, length=12, seed=1),
        n_train=3000,
        n_test=300,
        out_dir=str(tmp_path),
    )
    cfg = replace(
        cfg,
        translator=replace(cfg.translator, steps=1, progress=False),  # the unsupervised run is not the subject
        aligned_translator=replace(cfg.aligned_translator, steps=300, eval_every=100),
    )
    report = run_benchmark(cfg)
    assert report["ceiling"] - report["lookup"] > 0.1
    assert report["aligned_accuracy"] > report["lookup"] + 0.02, report
