"""Label methods and held-out example windows on a planted-feature synthetic run."""

from __future__ import annotations

import pytest

from sae_translate.bench.synthetic import make_synthetic_run
from sae_translate.errors import UserError
from sae_translate.label import BASELINES, LABELERS, LabelConfig, label_run, register_labeler
from sae_translate.label.examples import ExampleConfig, HeldoutSlice, sample_examples
from sae_translate.store.db import run_query


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path = tmp_path_factory.mktemp("planted")
    return make_synthetic_run(path / "run", n_seq=160, ctx=32, d_sae=24, p_fire=0.95, noise_per_token=0.3, seed=1)


@pytest.fixture(scope="module")
def labelled(planted, tmp_path_factory):
    db = tmp_path_factory.mktemp("db") / "labels.duckdb"
    result = label_run(LabelConfig(run=str(planted.run.dir), db=str(db), methods=BASELINES))
    return result, db


def test_auto_methods_are_the_translators_the_run_has_describe_corpus_and_the_baselines(tmp_path):
    from sae_translate.label.stage import label_methods
    from sae_translate.translator.run import translator_dir

    untrained = ["describe-corpus", *BASELINES]
    assert label_methods(("auto",), tmp_path) == untrained
    assert label_methods(("top-tokens", "auto"), tmp_path) == ["top-tokens", "describe-corpus", *BASELINES[1:]]
    aligned = translator_dir(tmp_path, "aligned")
    aligned.mkdir()
    (aligned / "best.safetensors").write_bytes(b"")  # a checkpoint is there once train has saved one
    assert label_methods(("auto",), tmp_path) == ["translator-aligned", *untrained]
    (translator_dir(tmp_path, "unsupervised") / "x").parent.mkdir()  # a directory without a checkpoint
    assert label_methods(("auto",), tmp_path) == ["translator-aligned", *untrained]


def _rows(db, sql):
    return run_query(sql, db).rows


def test_every_alive_feature_gets_a_label_from_every_method(planted, labelled):
    result, db = labelled
    alive = planted.run.alive
    assert result.n_features == len(alive)
    counts = _rows(
        db, "SELECT method, count(DISTINCT feature) FROM labels WHERE rank = 0 GROUP BY method ORDER BY method"
    )
    assert counts == [(m, len(alive)) for m in sorted(("top-tokens", "logit-lens", "constant", "random"))]
    empty = _rows(db, "SELECT count(*) FROM labels WHERE label = ''")[0][0]
    assert empty == 0


def test_top_tokens_finds_the_planted_trigger(planted, labelled):
    _, db = labelled
    vocab = planted.run.vocab
    labels = dict(_rows(db, "SELECT feature, label FROM labels WHERE method = 'top-tokens'"))
    # the trigger is the most frequent token among the top activations of every feature
    first = {f: label.split(", ")[0] for f, label in labels.items()}
    assert first == {f: vocab[planted.trigger[f]] for f in labels}


def test_random_labels_are_other_features_labels(labelled):
    _, db = labelled
    rows = _rows(
        db,
        "SELECT r.feature, r.label, t.label FROM labels r JOIN labels t "
        "USING (run_id, feature) WHERE r.method = 'random' AND t.method = 'top-tokens'",
    )
    top = sorted(t for _, _, t in rows)
    assert sorted(r for _, r, _ in rows) == top  # a permutation of the top-tokens labels
    assert sum(r == t for _, r, t in rows) < len(rows) / 4


def test_examples_come_from_heldout_and_mark_firing_tokens(planted, labelled):
    _, db = labelled
    run = planted.run
    rows = _rows(db, "SELECT feature, kind, activation, text, seq, start, stop FROM examples")
    kinds = {k for _, k, *_ in rows}
    assert kinds == {"top", "quantile", "random"}
    heldout = set(run.heldout_seqs.tolist())
    assert all(seq in heldout for *_, seq, _, _ in rows)
    dense = {}
    for f, kind, act, text, seq, start, stop in rows:
        if seq not in dense:
            dense[seq] = run.dense([seq])[0]
        true = dense[seq][start:stop, f]
        assert act == pytest.approx(true.max(), abs=1e-6)
        assert (kind == "random") == (true.max() == 0)
        assert text.count("«") == int((true > 0).sum())
    top = [(f, text) for f, kind, _, text, *_ in rows if kind == "top"]
    with_trigger = sum(f"«{run.vocab[planted.trigger[f]]}»" in text for f, text in top)
    assert with_trigger >= 0.9 * len(top)


def test_quantile_and_random_counts(planted):
    run = planted.run
    data = HeldoutSlice.load(run, run.heldout_seqs)
    cfg = ExampleConfig(window=8, n_top=3, n_quantiles=4, n_per_quantile=2)
    ex = sample_examples(data, run.alive, cfg)
    for f in run.alive:
        mine = ex.feature == f
        n_act = ex.heldout_windows[f]
        assert (ex.kind[mine] == 0).sum() == min(3, n_act)
        assert (ex.kind[mine] == 1).sum() == min(8, n_act)
        assert (ex.kind[mine] == 2).sum() == 8
        random_windows = set(zip(ex.seq[mine & (ex.kind == 2)], ex.start[mine & (ex.kind == 2)]))
        assert len(random_windows) == 8  # distinct


def test_rerun_does_not_duplicate(planted, tmp_path):
    db = tmp_path / "labels.duckdb"
    cfg = LabelConfig(run=str(planted.run.dir), db=str(db), methods=("top-tokens",))
    label_run(cfg)
    before = _rows(
        db,
        "SELECT (SELECT count(*) FROM labels), (SELECT count(*) FROM examples), "
        "(SELECT count(*) FROM runs), (SELECT count(*) FROM features)",
    )
    label_run(cfg)
    after = _rows(
        db,
        "SELECT (SELECT count(*) FROM labels), (SELECT count(*) FROM examples), "
        "(SELECT count(*) FROM runs), (SELECT count(*) FROM features)",
    )
    assert before == after
    assert after[0][2] == 1 and after[0][3] == planted.run.d_sae


def test_registry_accepts_a_new_method(planted, tmp_path):
    @register_labeler("first-letter")
    def first_letter(ctx):
        return [[f"feature {f}", f"candidate {f}"] for f in ctx.features]

    try:
        db = tmp_path / "labels.duckdb"
        label_run(LabelConfig(run=str(planted.run.dir), db=str(db), methods=("first-letter",)))
        ranks = _rows(db, "SELECT rank, count(*) FROM labels GROUP BY rank ORDER BY rank")
        n = len(planted.run.alive)
        assert ranks == [(0, n), (1, n)]
    finally:
        LABELERS.pop("first-letter")


BUILT_IN = {"top-tokens", "logit-lens", "constant", "random", "describe-corpus", "translator", "translator-aligned"}


@pytest.mark.parametrize(
    "code",
    [
        "from sae_translate.label import LABELERS; print(*LABELERS)",
        "from sae_translate.label.base import LABELERS, get_labeler; get_labeler('random'); print(*LABELERS)",
    ],
    ids=["package", "get_labeler"],
)
def test_every_built_in_method_is_registered_in_a_fresh_process(code):
    """The package imports its method modules on first use, not on import (the command line reads
    only its config): whichever way a process reaches the registry, every method is in it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env)
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) == BUILT_IN


def test_unknown_method_is_a_user_error(planted, tmp_path):
    with pytest.raises(UserError, match="unknown label method"):
        label_run(LabelConfig(run=str(planted.run.dir), db=str(tmp_path / "x.duckdb"), methods=("nope",)))


def test_label_command(planted, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    db = tmp_path / "labels.duckdb"

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "sae_translate", "label", *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=300,
        )

    ok = cli("--run", str(planted.run.dir), "--db", str(db), "--scorers", "detection")
    assert ok.returncode == 0, ok.stderr
    assert "detection" in ok.stdout and "top-tokens" in ok.stdout
    n = _rows(db, "SELECT count(*) FROM scores WHERE scorer = 'detection'")[0][0]
    assert n > 0
    bad = cli("--run", str(tmp_path / "missing"), "--db", str(db))
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1


def test_label_and_score_close_the_run_store(tmp_path):
    """The stages open the run's HDF5 file and close it again, even when called in one process."""
    import h5py

    from sae_translate.score import ScoreConfig, score_run

    syn = make_synthetic_run(tmp_path / "run", n_seq=64, ctx=16, d_sae=8)
    syn.run.close()

    def open_files() -> int:
        return h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)

    before = open_files()
    db = tmp_path / "labels.duckdb"
    label_run(LabelConfig(run=str(syn.run.dir), db=str(db), methods=("top-tokens", "random"), scorers=()))
    assert open_files() == before
    score_run(ScoreConfig(run=str(syn.run.dir), db=str(db), scorers=("detection",)))
    assert open_files() == before


def test_describer_labels_store_their_train_fidelity(planted, tmp_path):
    """Each describer label carries the F1 on train tokens it was chosen by (what the describer
    computes for the stored rule); labels of methods that measure none carry NULL."""
    import numpy as np

    from sae_translate.label.describe import rule_evaluator
    from sae_translate.label.describer import DescriberConfig, TrainSample
    from sae_translate.label.rules import Rule

    db = tmp_path / "labels.duckdb"
    cfg = LabelConfig(run=str(planted.run.dir), db=str(db), methods=("describe-corpus", "top-tokens"))
    label_run(cfg)
    rows = _rows(db, "SELECT feature, rule, fidelity FROM labels WHERE method = 'describe-corpus' AND rank = 0")
    assert len(rows) == len(planted.run.alive)
    features = planted.run.alive.astype(np.int64)
    sample = TrainSample(planted.run, rule_evaluator(planted.run.vocab)[0], features, DescriberConfig(seed=cfg.seed))
    for f, rule, fidelity in rows:
        assert 0 < fidelity <= 1
        assert fidelity == pytest.approx(sample.fidelity(f, Rule.from_json(rule)))
    # the planted features fire on their trigger: the chosen rules fit well
    assert np.median([r[2] for r in rows]) > 0.5
    ranked = _rows(db, "SELECT fidelity FROM labels WHERE method = 'describe-corpus' AND rank > 0")
    assert ranked and all(0 <= r[0] <= 1 for r in ranked)
    assert _rows(db, "SELECT count(*) FROM labels WHERE method = 'top-tokens' AND fidelity IS NOT NULL") == [(0,)]
