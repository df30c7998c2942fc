import numpy as np
import pytest
import torch

from sae_translate.bench.synthetic import make_synthetic_run
from sae_translate.errors import UserError
from sae_translate.translator.languages import NONE, LanguageConfig, build_languages
from sae_translate.translator.run import context_distributions, train_on_run
from sae_translate.translator.train import TranslatorConfig

WORDS = "cat dog horse red blue green one two three paris london rome apple bread tea car boat bus".split()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path = tmp_path_factory.mktemp("planted")
    return make_synthetic_run(
        path / "run", n_seq=120, ctx=16, d_sae=12, vocab=WORDS, p_fire=0.95, noise_per_token=0.4, seed=3
    )


def naive_feature_words(run, cfg: LanguageConfig) -> np.ndarray:
    """Per token, by brute force: the eligible active feature with the largest value / max, or -1."""
    stats = run.stats
    eligible = (stats.count >= cfg.min_count) & (stats.frequency <= cfg.dense_threshold) & (stats.max > 0)
    dense = run.dense(run.train_seqs)
    out = np.full(dense.shape[:2], -1)
    for s in range(dense.shape[0]):
        for t in range(dense.shape[1]):
            best, best_score = -1, -np.inf
            for f in np.flatnonzero(dense[s, t]):
                score = dense[s, t, f] / stats.max[f]
                if eligible[f] and score > best_score:
                    best, best_score = f, score
            out[s, t] = best
    return out


@pytest.mark.parametrize("share_dense", [0.0, 0.5])
def test_feature_sentences_pick_the_largest_normalised_eligible_feature(planted, share_dense):
    frequency = planted.run.stats.frequency
    threshold = 1.0 if share_dense == 0 else float(np.quantile(frequency, 1 - share_dense))
    cfg = LanguageConfig(dense_threshold=threshold, min_count=2)
    langs = build_languages(planted.run, cfg)
    expected = naive_feature_words(planted.run, cfg)
    got = langs.feature_ids[langs.aligned().a]  # feature id per position, -1 for NONE
    assert np.array_equal(got, expected)
    assert langs.feature_vocab[0] == NONE
    dense = frequency > threshold
    assert dense.sum() == round(share_dense * len(frequency))
    assert not set(np.flatnonzero(dense)) & set(langs.feature_ids.tolist())
    if share_dense:
        assert (got == -1).any()  # some positions have no qualifying feature


def test_text_sentences_are_the_train_tokens_over_a_compact_vocabulary(planted):
    langs = build_languages(planted.run)
    run = planted.run
    assert langs.n_sentences == len(run.train_seqs)
    text = langs.aligned().b
    assert text.max() < langs.text_vocab_size
    assert np.array_equal(langs.token_ids[text], run.tokens(run.train_seqs))
    assert [langs.text_vocab[w] for w in text[0]] == [run.vocab[t] for t in run.tokens(run.train_seqs[:1])[0]]
    with pytest.raises(UserError):
        langs.feature_sentences(run.heldout_seqs[:1])


def test_unsupervised_corpora_are_independently_shuffled_copies(planted):
    langs = build_languages(planted.run)
    pairs = langs.aligned()
    features, text = langs.unsupervised()
    # the same sentences...
    assert sorted(map(tuple, features.sentences)) == sorted(map(tuple, pairs.a))
    assert sorted(map(tuple, text.sentences)) == sorted(map(tuple, pairs.b))
    # ...but row i of one corpus is not the partner of row i of the other
    row_of_text = {tuple(t): i for i, t in enumerate(pairs.b)}
    partners = np.array(
        [np.array_equal(pairs.a[row_of_text[tuple(t)]], f) for f, t in zip(features.sentences, text.sentences)]
    )
    assert partners.mean() < 0.1


def test_bad_language_settings_are_user_errors(planted):
    with pytest.raises(UserError):
        build_languages(planted.run, LanguageConfig(variant="top3"))
    with pytest.raises(UserError):
        build_languages(planted.run, LanguageConfig(min_count=10**9))


@pytest.mark.slow
def test_aligned_translator_labels_planted_features_with_their_trigger_words(planted, tmp_path):
    torch.set_num_threads(1)
    cfg = TranslatorConfig(
        mode="aligned",
        steps=200,
        lr=3e-3,
        dim=32,
        heads=2,
        depth=1,
        decoder_depth=1,
        batch_size=16,
        eval_every=100,
        progress=False,
    )
    checkpoint = train_on_run(planted.run.dir, cfg, out=tmp_path / "translator-aligned")
    langs = build_languages(planted.run)
    features = np.arange(planted.run.d_sae)
    offsets = (-1, 0, 1)
    ids, probs, marginal = context_distributions(
        checkpoint, langs, features, planted.run.top_positions, offsets, contexts=4, top_k=3, device="cpu"
    )
    assert ids.shape == probs.shape == (len(features), len(offsets), 3)
    at = offsets.index(0)
    right = [langs.text_vocab[ids[f, at, 0]] == WORDS[planted.trigger[f]] for f in features]
    assert np.mean(right) > 0.8
    assert (np.diff(probs, axis=-1) <= 0).all()  # best first
    assert marginal.shape == (len(offsets), langs.text_vocab_size)
    assert marginal[at].sum() == pytest.approx(1)  # every sentence is read at the feature's own position
