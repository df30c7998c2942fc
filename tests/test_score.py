"""Scorers on cases with a known answer: exact labels score near 1, random ones near chance."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from sae_translate.bench.synthetic import make_synthetic_run
from sae_translate.label import (
    LABELERS,
    Label,
    LabelConfig,
    label_run,
    register_labeler,
)
from sae_translate.label.describe import rule_evaluator
from sae_translate.label.examples import HeldoutSlice
from sae_translate.label.rules import Context, Rule, Selector
from sae_translate.score import ScoreConfig, score_run
from sae_translate.score.ground_truth import (
    PLANTED,
    SPLIT,
    concept_membership,
    f1,
    planted_concepts,
)
from sae_translate.score.simulation import (
    detection_scores,
    label_terms,
    simulation_scores,
    token_matches,
)
from sae_translate.score.windows import auroc
from sae_translate.store.db import run_query
from sae_translate.store.h5 import Codes, RunStore, write_run
from sae_translate.world import generate_documents, load_world_config, tag_words


def test_auroc_detection_simulation_on_constructed_arrays():
    valid = np.ones((3, 4), bool)
    positive = np.array([[True, True, False, False]] * 3)
    scores = np.array([[0.9, 0.8, 0.1, 0.2], [0.1, 0.2, 0.9, 0.8], [0.5, 0.5, 0.5, 0.5]])
    assert auroc(scores, positive, valid).tolist() == [1.0, 0.0, 0.5]
    pred_tokens = np.zeros((3, 4, 2), bool)
    pred_tokens[0, :2, 0] = True  # exactly the activating windows
    pred_tokens[1, :, 1] = True  # every window
    assert detection_scores(pred_tokens, positive, valid).tolist() == [1.0, 0.5, 0.5]
    acts = pred_tokens[0:1].astype(np.float32) * 3.0
    same = simulation_scores(pred_tokens[0:1], acts, np.ones_like(acts, bool))
    flipped = simulation_scores(~pred_tokens[0:1], acts, np.ones_like(acts, bool))
    silent = simulation_scores(pred_tokens[2:3], acts, np.ones_like(acts, bool))
    assert same[0] == pytest.approx(1.0) and flipped[0] == pytest.approx(-1.0) and silent[0] == 0.0


def test_label_terms_and_token_matching():
    assert label_terms("cat, dog") == {"cat", "dog"}
    assert label_terms("the, a") == {"the", "a"}  # stopwords kept when alone
    assert "number" in label_terms("word after a number") and "a" not in label_terms("word after a number")
    assert label_terms(",, .") == {",", "."}  # punctuation tokens can be named
    vocab = ["cat", " cats", "dog", ",", "the"]
    tokens = np.array([[[0, 1, 2, 3, 4]], [[0, 1, 2, 3, 4]]])
    m = token_matches(["cat", ","], vocab, tokens)
    assert m[0, 0].tolist() == [True, True, False, False, False]  # plural -s and spaces ignored
    assert m[1, 0].tolist() == [False, False, False, True, False]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    # no background noise and p_fire = 1: a feature fires exactly on its trigger word
    path = tmp_path_factory.mktemp("clean")
    return make_synthetic_run(
        path / "run", n_seq=240, ctx=32, d_sae=24, p_fire=1.0, noise_per_token=0.0, heldout=0.5, seed=3
    )


@pytest.fixture(scope="module")
def scored(clean_run, tmp_path_factory):
    vocab, trigger = clean_run.run.vocab, clean_run.trigger

    @register_labeler("exact")
    def exact(ctx):
        return [[Label(vocab[trigger[f]], Rule.tokens([vocab[trigger[f]]]))] for f in ctx.features]

    try:
        db = tmp_path_factory.mktemp("db") / "labels.duckdb"
        label_run(LabelConfig(run=str(clean_run.run.dir), db=str(db), methods=("exact", "random")))
    finally:
        LABELERS.pop("exact")
    result = score_run(ScoreConfig(run=str(clean_run.run.dir), db=str(db)))
    return {(s.method, s.scorer): s for s in result.summary}, db


def test_exact_labels_score_near_one(scored):
    summary, _ = scored
    assert summary["exact", "detection"].mean == pytest.approx(1.0)
    assert summary["exact", "simulation"].mean > 0.8
    assert summary["exact", "embedding"].mean > 0.75
    assert summary["exact", "embedding"].n_excluded == 0


def test_random_labels_score_near_chance(scored):
    summary, _ = scored
    assert 0.4 < summary["random", "detection"].mean < 0.6
    assert abs(summary["random", "simulation"].mean) < 0.15
    assert 0.35 < summary["random", "embedding"].mean < 0.65
    assert summary["exact", "embedding"].mean - summary["random", "embedding"].mean > 0.2


def test_scores_stored_once_per_feature_and_rescoring_replaces(scored, clean_run):
    summary, db = scored
    q = "SELECT method, scorer, count(*), count(DISTINCT feature) FROM scores GROUP BY ALL ORDER BY ALL"
    before = run_query(q, db).rows
    assert all(n == d == summary[m, s].n_scored for m, s, n, d in before)
    score_run(ScoreConfig(run=str(clean_run.run.dir), db=str(db), scorers=("detection",)))
    assert run_query(q, db).rows == before
    stored = run_query("SELECT method, scorer, mean FROM score_summary", db).rows
    for method, scorer, mean in stored:
        assert mean == pytest.approx(summary[method, scorer].mean)


_INDEX_BUILT = """
import sys

from sae_translate.label import Label, LabelConfig, label_run, register_labeler
from sae_translate.label.describe import rule_evaluator
from sae_translate.label.rules import Rule, Selector
from sae_translate.score import ScoreConfig, score_run
from sae_translate.store.db import run_query
from sae_translate.store.h5 import RunStore

run, db = sys.argv[1:3]
with RunStore.open(run) as store:
    categories = rule_evaluator(store.vocab)[1]
score_run(ScoreConfig(run=run, db=db, scorers=("detection", "simulation")))
print("token rules:", categories.built)


@register_labeler("animal")
def animal(ctx):
    return [[Label("animal", Rule(Selector(synset="animal.n.01", name="animal")))] for _ in ctx.features]


label_run(LabelConfig(run=run, db=db, methods=("animal",)))
score_run(ScoreConfig(run=run, db=db, methods=("animal",), scorers=("detection",)))
print("category rule:", categories.built)
sql = "SELECT count(*) FROM scores WHERE method = 'animal' AND scorer = 'detection'"
print("scored:", run_query(sql, db).rows[0][0])
"""


def test_the_wordnet_index_is_built_on_the_first_category_rule_only(scored, clean_run, tmp_path):
    """Building the category index takes seconds (about 20 s at a 50k vocabulary): scoring token
    rules never waits for it, and the first category rule builds it. In a fresh process, since
    the label stage of this one may have built it already."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    db = tmp_path / "labels.duckdb"
    shutil.copy(scored[1], db)  # labels of "exact" and "random": token-set rules
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", _INDEX_BUILT, str(clean_run.run.dir), str(db)],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "token rules: False" in lines and "category rule: True" in lines
    assert f"scored: {len(clean_run.run.alive)}" in lines


def test_true_concepts_on_a_world_corpus(tmp_path):
    """Features planted on concepts recover them; a noise feature has no dominant concept."""
    cfg = load_world_config()
    docs = generate_documents(cfg, n_tokens=6000, seed=0)
    words = [w for d in docs for w in d.words]
    tags = [t for d in docs for t in d.concepts]
    vocab = sorted(set(words))
    ctx = 32
    n_seq = len(words) // ctx
    tokens = np.array([vocab.index(w) for w in words[: n_seq * ctx]], np.int32).reshape(n_seq, ctx)
    planted = ["animal", "colour", "inside_quote", "after_number"]
    rng = np.random.default_rng(0)
    dense = np.zeros((n_seq * ctx, len(planted) + 1), np.float32)
    for j, concept in enumerate(planted):
        dense[[concept in t for t in tags[: n_seq * ctx]], j] = 1.0
    dense[rng.random(len(dense)) < 0.2, len(planted)] = 0.5  # fires anywhere
    written = write_run(
        tmp_path / "run",
        tokens=tokens,
        codes=Codes.from_dense(dense),
        split=np.ones(n_seq, np.uint8),
        vocab=vocab,
        attrs={"d_sae": dense.shape[1], "config": "{}"},
    )
    run = written if isinstance(written, RunStore) else RunStore.open(written)
    data = HeldoutSlice.load(run, run.heldout_seqs)
    names = list(cfg.concept_names)
    member = concept_membership(data, vocab, names, partial(tag_words, cfg))
    found = planted_concepts(data, member, names, np.arange(dense.shape[1]), min_precision=0.5, min_firings=5)
    # each planted feature recovers its concept; the one firing anywhere is split across concepts
    assert found.feature.tolist() == list(range(len(planted) + 1))
    assert found.concept[: len(planted)] == planted and found.status == [PLANTED] * len(planted) + [SPLIT]
    assert (found.precision[: len(planted)] > 0.9).all()
    # each fires on its concept's tokens (as tagged over whole documents; the held-out tagger sees one
    # sequence, so a context concept may lose its first token): a label stating the feature scores ~1
    assert (found.firing_f1[: len(planted)] > 0.95).all() and found.firing_f1[-1] == 0
    assert found.firing_f1[planted.index("animal")] == pytest.approx(1.0)  # lexical: exact

    # extensional ground truth: the rule stating the concept selects its tokens
    evaluator, _ = rule_evaluator(vocab)
    view = evaluator.view(data.tokens)
    animal = names.index("animal")
    all_animals = Rule.tokens(cfg.concept("animal").words)
    assert f1(evaluator.select(all_animals, view).reshape(-1), member[:, animal]) == pytest.approx(1.0)
    two = Rule.tokens(cfg.concept("animal").words[:2])
    assert 0 < f1(evaluator.select(two, view).reshape(-1), member[:, animal]) < 0.5
    quote = Rule(context=Context("inside", delimiters=("“", "”")))
    assert f1(evaluator.select(quote, view).reshape(-1), member[:, names.index("inside_quote")]) > 0.95
    after_number = Rule(context=Context("after", of=Selector(tokens=tuple(cfg.concept("number").words))))
    assert f1(evaluator.select(after_number, view).reshape(-1), member[:, names.index("after_number")]) > 0.95


def test_planted_concept_is_the_narrowest_of_equal_precision():
    """A feature on city words is a city feature, not a place feature, though every city is a
    place too; two concepts tagging exactly the same tokens are a tie."""
    member = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=bool)  # city, place, other
    data = HeldoutSlice(
        seqs=np.array([0]),
        tokens=np.zeros((1, 4), np.int32),
        ctx=4,
        d_sae=2,
        token_index=np.array([0, 1, 0, 1]),
        feature=np.array([0, 0, 1, 1], np.int32),
        value=np.ones(4, np.float32),
        _keys=np.array([0, 1, 2, 3]),
    )
    found = planted_concepts(data, member, ["city", "place", "other"], np.array([0, 1]), 0.5, 1)
    assert found.concept[0] == "city" and found.status[0] == PLANTED
    tie = planted_concepts(data, member[:, [0, 0, 2]], ["a", "b", "other"], np.array([0]), 0.5, 1)
    assert tie.status == ["tie"] and tie.concept == ["a | b"]
