"""The label database: whole-run replacement, read-only queries, readers during writes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

from sae_translate.errors import UserError
from sae_translate.store import db


def _stage(
    n_features: int, methods=("top-tokens", "random"), tag: str = "", fidelity: bool = False
) -> db.LabelStageRows:
    feats = np.arange(n_features, dtype=np.int32)
    labels = {
        "feature": np.tile(feats, len(methods)),
        "method": [m for m in methods for _ in feats],
        "label": [f"{m} {tag}{f}" for m in methods for f in feats],
        "rank": np.zeros(n_features * len(methods), dtype=np.int32),
    }
    if fidelity:  # a few distinct values, so that ties occur
        labels["fidelity"] = np.array([(3 * f + 5 * i) % 4 / 4 for i in range(len(methods)) for f in feats])
    examples = {
        "feature": np.repeat(feats, 2),
        "kind": ["top", "random"] * n_features,
        "rank": np.zeros(2 * n_features, np.int32),
        "activation": np.tile(np.array([1.0, 0.0], np.float32), n_features),
        "text": ["a «b» c", "a b c"] * n_features,
        "seq": np.zeros(2 * n_features, np.int64),
        "start": np.zeros(2 * n_features, np.int32),
        "stop": np.full(2 * n_features, 3, np.int32),
    }
    features = {
        "feature": feats,
        "alive": np.ones(n_features, bool),
        "count": np.ones(n_features, np.int64),
        "frequency": np.full(n_features, 0.1),
        "max_activation": np.ones(n_features, np.float32),
        "mean_activation": np.ones(n_features, np.float32),
        "heldout_windows": np.ones(n_features, np.int64),
    }
    run = {
        "path": "/x",
        "model": "m",
        "hook": "h",
        "sae": "s",
        "dataset": "d",
        "d_sae": n_features,
        "n_tokens": 10,
        "world": "",
        "created_at": None,
        "config": "{}",
    }
    return db.LabelStageRows(run, features, labels, examples, methods)


def _counts(path: Path, run_id: str) -> dict[str, int]:
    con = db.connect_readonly(path)
    try:
        return {
            t: con.execute(f"SELECT count(*) FROM {t} WHERE run_id = ?", [run_id]).fetchone()[0]
            for t in ("runs", "features", "labels", "examples")
        }
    finally:
        con.close()


def test_rerun_replaces_rows_and_keeps_other_runs(tmp_path):
    path = tmp_path / "labels.duckdb"
    db.write_label_stage(path, "a", _stage(5))
    db.write_label_stage(path, "b", _stage(3))
    first = _counts(path, "a")
    db.write_label_stage(path, "a", _stage(5, tag="new"))
    assert _counts(path, "a") == first == {"runs": 1, "features": 5, "labels": 10, "examples": 10}
    assert _counts(path, "b") == {"runs": 1, "features": 3, "labels": 6, "examples": 6}
    labels = db.run_query("SELECT DISTINCT label FROM labels WHERE run_id = 'a'", path).rows
    assert all("new" in r[0] for r in labels)


def test_relabelling_one_method_keeps_the_others(tmp_path):
    path = tmp_path / "labels.duckdb"
    db.write_label_stage(path, "a", _stage(4))
    db.write_label_stage(path, "a", _stage(4, methods=("translator",)))
    rows = db.run_query("SELECT method, count(*) FROM labels GROUP BY method ORDER BY method", path).rows
    assert rows == [("random", 4), ("top-tokens", 4), ("translator", 4)]


def test_score_rewrite_and_best_labels(tmp_path):
    path = tmp_path / "labels.duckdb"
    db.write_label_stage(path, "a", _stage(2))
    scores = {
        "feature": np.array([0, 0, 1, 1, 0, 1], np.int32),
        "method": ["top-tokens", "random", "top-tokens", "random", "top-tokens", "top-tokens"],
        "scorer": ["embedding"] * 4 + ["detection"] * 2,
        "value": np.array([0.9, 0.95, 0.4, 0.99, 0.1, 0.2]),
    }
    summary = {"method": ["top-tokens"], "scorer": ["embedding"], "mean": [0.65], "n_scored": [2], "n_excluded": [0]}
    rows = db.ScoreStageRows(scores, summary, None, ("top-tokens", "random"), ("embedding", "detection"))
    db.write_score_stage(path, "a", rows)
    db.write_score_stage(path, "a", rows)
    n = db.run_query("SELECT count(*) FROM scores", path).rows[0][0]
    assert n == 6
    best = db.run_query("SELECT feature, method, score FROM best_labels ORDER BY feature", path).rows
    # random never wins, even with the higher embedding score; ranking is by embedding
    assert best == [(0, "top-tokens", 0.9), (1, "top-tokens", 0.4)]
    # rescoring only detection keeps the embedding scores
    only_det = db.ScoreStageRows({k: v[4:] for k, v in scores.items()}, summary, None, ("top-tokens",), ("detection",))
    db.write_score_stage(path, "a", only_det)
    got = db.run_query("SELECT scorer, count(*) FROM scores GROUP BY scorer ORDER BY scorer", path).rows
    assert got == [("detection", 2), ("embedding", 4)]


def test_query_is_read_only_and_errors_are_one_line(tmp_path):
    path = tmp_path / "labels.duckdb"
    db.write_label_stage(path, "a", _stage(2))
    with pytest.raises(UserError) as err:
        db.run_query("SELEC 1", path)
    assert "\n" not in str(err.value) and "SQL error" in str(err.value)
    with pytest.raises(UserError):
        db.run_query("DELETE FROM labels", path)
    assert _counts(path, "a")["labels"] == 4
    with pytest.raises(UserError, match="no label database"):
        db.run_query("SELECT 1", tmp_path / "missing.duckdb")


def test_formats(tmp_path):
    path = tmp_path / "labels.duckdb"
    db.write_label_stage(path, "a", _stage(2))
    result = db.run_query("SELECT feature, label FROM labels WHERE method = 'random' ORDER BY feature", path)
    csv_lines = db.format_result(result, "csv").splitlines()
    assert csv_lines == ["feature,label", "0,random 0", "1,random 1"]
    assert json.loads(db.format_result(result, "json")) == [
        {"feature": 0, "label": "random 0"},
        {"feature": 1, "label": "random 1"},
    ]
    table = db.format_result(result, "table").splitlines()
    assert table[0].split() == ["feature", "label"] and table[-1] == "(2 rows)"


WRITER = textwrap.dedent("""
    import sys
    from tests.test_db import _stage
    from sae_translate.store import db
    path, n = sys.argv[1], int(sys.argv[2])
    for i in range(n):
        db.write_label_stage(path, "a", _stage(200 if i % 2 else 300))
    print("done")
""")


def test_readers_never_fail_or_see_half_a_run_during_writes(tmp_path):
    path = tmp_path / "labels.duckdb"
    db.write_label_stage(path, "a", _stage(300))
    root = Path(__file__).resolve().parents[1]
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "30"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = set()
    reads = 0
    try:
        while writer.poll() is None or reads == 0:
            counts = _counts(path, "a")
            # a whole 200- or 300-feature run, never a mix or an empty one
            n = counts["features"]
            assert n in (200, 300)
            assert counts == {"runs": 1, "features": n, "labels": 2 * n, "examples": 2 * n}
            seen.add(n)
            reads += 1
        # a second reader process through the CLI code path at the end
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "from sae_translate.store import db; import sys; "
                "print(db.run_query('SELECT count(*) FROM labels', sys.argv[1]).rows[0][0])",
                str(path),
            ],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) in (400, 600)
    finally:
        stdout, stderr = writer.communicate(timeout=300)
    assert writer.returncode == 0, stderr
    assert reads > 1
    assert _counts(path, "a")["features"] == 200  # the last write (i = 29) wins


def test_two_writers_serialise(tmp_path):
    path = tmp_path / "labels.duckdb"
    root = Path(__file__).resolve().parents[1]
    code = textwrap.dedent("""
        import sys
        from tests.test_db import _stage
        from sae_translate.store import db
        for i in range(10):
            db.write_label_stage(sys.argv[1], sys.argv[2], _stage(50))
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path), run_id], cwd=root, stderr=subprocess.PIPE, text=True)
        for run_id in ("x", "y")
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    # neither writer's rename lost the other's run
    assert _counts(path, "x")["features"] == 50 and _counts(path, "y")["features"] == 50
    assert not list(tmp_path.glob(".labels.duckdb.tmp-*"))


def _cli(*args: str) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-m", "sae_translate", *args], cwd=root, capture_output=True, text=True, timeout=120
    )


def test_query_command(tmp_path):
    path = tmp_path / "labels.duckdb"
    db.write_label_stage(path, "a", _stage(2))
    ok = _cli(
        "query",
        "SELECT feature, label FROM labels WHERE method = 'random' ORDER BY feature",
        "--db",
        str(path),
        "--format",
        "csv",
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["feature,label", "0,random 0", "1,random 1"]
    bad = _cli("query", "SELECT nope FROM labels", "--db", str(path))
    assert bad.returncode != 0
    assert len(bad.stderr.strip().splitlines()) == 1 and "SQL error" in bad.stderr


def test_killed_writer_leaves_the_previous_state(tmp_path):
    path = tmp_path / "labels.duckdb"
    db.write_label_stage(path, "a", _stage(10))
    root = Path(__file__).resolve().parents[1]
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER.replace("200 if i % 2 else 300", "100_000"), str(path), "1"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    # kill it once it holds the lock and is writing its private copy
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".labels.duckdb.tmp-*")) and writer.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    writer.kill()
    writer.wait()
    assert _counts(path, "a")["features"] in (10, 100_000)
    db.write_label_stage(path, "b", _stage(5))
    assert _counts(path, "b")["features"] == 5
    assert not list(tmp_path.glob(".labels.duckdb.tmp-*"))


# best_labels as schema version 1 defined it (a view ranking labels x scores on every query)
OLD_BEST_LABELS_VIEW = """
    SELECT l.run_id, l.feature, l.method, l.label, s.value AS score
    FROM labels l JOIN scores s
      ON s.run_id = l.run_id AND s.feature = l.feature AND s.method = l.method
    WHERE l.rank = 0 AND s.scorer = 'embedding'
    QUALIFY row_number() OVER (
        PARTITION BY l.run_id, l.feature ORDER BY s.value DESC, l.method) = 1
"""


def _reference_best(path: Path) -> list[tuple]:
    """The best label of every labelled feature, computed row by row: the highest embedding score,
    then detection, then fidelity (a missing value below any), then method name; never the floors."""
    con = db.connect_readonly(path)
    try:
        labels = con.execute(
            "SELECT run_id, feature, method, label, fidelity FROM labels "
            "WHERE rank = 0 AND method NOT IN ('random', 'constant')"
        ).fetchall()
        scores = {
            (r, f, m, sc): v
            for r, f, m, sc, v in con.execute("SELECT run_id, feature, method, scorer, value FROM scores").fetchall()
        }
    finally:
        con.close()

    def order(row: tuple) -> tuple:
        run_id, feature, method, _, fidelity = row
        emb, det = (scores.get((run_id, feature, method, sc)) for sc in ("embedding", "detection"))
        return tuple(x for v in (emb, det, fidelity) for x in (v is None, -(v or 0.0))) + (method,)

    best: dict[tuple, tuple] = {}
    for row in sorted(labels, key=order):
        best.setdefault(row[:2], row)
    return sorted((r, f, m, label, scores.get((r, f, m, "embedding"))) for (r, f), (_, _, m, label, _) in best.items())


def _random_scores(rng: np.random.Generator, n_features: int, methods, scorers) -> db.ScoreStageRows:
    grid = [(f, m, s) for f in range(n_features) for m in methods for s in scorers]
    keep = [g for g in grid if rng.random() > 0.1]  # some labels have no score at all
    # few distinct values, so that ties between methods occur and the tie-break is exercised
    values = rng.integers(0, 4, len(keep)) / 4
    scores = {
        "feature": np.array([g[0] for g in keep], np.int32),
        "method": [g[1] for g in keep],
        "scorer": [g[2] for g in keep],
        "value": values,
    }
    summary = {
        "method": list(methods),
        "scorer": [scorers[0]] * len(methods),
        "mean": [0.5] * len(methods),
        "n_scored": [1] * len(methods),
        "n_excluded": [0] * len(methods),
    }
    return db.ScoreStageRows(scores, summary, None, tuple(methods), tuple(scorers))


def _materialised(path: Path) -> list[tuple]:
    return sorted(db.run_query("SELECT * FROM best_labels", path).rows)


def test_materialised_best_labels_equal_the_ranking(tmp_path):
    path = tmp_path / "labels.duckdb"
    rng = np.random.default_rng(0)
    methods = ("top-tokens", "logit-lens", "translator", "random", "constant")
    scorers = ("embedding", "detection")
    db.write_label_stage(path, "a", _stage(40, methods=methods, fidelity=True))
    db.write_label_stage(path, "b", _stage(30, methods=methods))
    steps = [
        lambda: db.write_score_stage(path, "a", _random_scores(rng, 40, methods, scorers)),
        lambda: db.write_score_stage(path, "b", _random_scores(rng, 30, methods, scorers)),
        # rescoring one method with one scorer leaves the others' scores in place
        lambda: db.write_score_stage(path, "a", _random_scores(rng, 40, ("logit-lens",), ("embedding",))),
        # relabelling a method drops its scores, so another method becomes the best
        lambda: db.write_label_stage(path, "a", _stage(40, methods=("top-tokens",), tag="new ", fidelity=True)),
        lambda: db.write_score_stage(path, "b", _random_scores(rng, 30, methods, ("detection",))),
        # a run labelled without scorers: ranked by the describer's fidelity
        lambda: db.write_label_stage(path, "c", _stage(10, methods=methods, fidelity=True)),
    ]
    for step in steps:
        step()
        assert _materialised(path) == _reference_best(path)
    best = _materialised(path)
    assert {r[0] for r in best} == {"a", "b", "c"} and len(best) == 80  # every labelled feature
    assert any(r[2] == "translator" for r in best)  # not just the first method
    assert any(r[4] is None for r in best)  # some ranked without an embedding score


def test_a_feature_without_an_embedding_score_keeps_a_best_label(tmp_path):
    # a feature firing in nearly every held-out window has no silent windows for the embedding
    # AUROC: it is still searchable, ranked by detection, then by the describer's fidelity
    path = tmp_path / "labels.duckdb"
    methods = ("top-tokens", "translator", "random")
    db.write_label_stage(path, "a", _stage(3, methods=methods, fidelity=True))
    scores = {
        "feature": np.array([0, 0, 1, 1], np.int32),
        "method": ["top-tokens", "translator", "top-tokens", "translator"],
        "scorer": ["embedding", "embedding", "detection", "detection"],
        "value": np.array([0.7, 0.6, 0.5, 0.8]),
    }
    summary = {"method": ["top-tokens"], "scorer": ["embedding"], "mean": [0.7], "n_scored": [1], "n_excluded": [2]}
    db.write_score_stage(path, "a", db.ScoreStageRows(scores, summary, None, methods, ("embedding", "detection")))
    best = db.run_query("SELECT feature, method, score FROM best_labels ORDER BY feature", path).rows
    fidelity = dict(
        db.run_query("SELECT method, fidelity FROM labels WHERE feature = 2 AND method != 'random'", path).rows
    )
    assert fidelity["translator"] > fidelity["top-tokens"]
    assert best == [(0, "top-tokens", 0.7), (1, "translator", None), (2, "translator", None)]


def test_version_1_database_is_migrated_on_write(tmp_path):
    path = tmp_path / "labels.duckdb"
    db.write_label_stage(path, "a", _stage(20, methods=("top-tokens", "logit-lens")))
    db.write_score_stage(
        path, "a", _random_scores(np.random.default_rng(1), 20, ("top-tokens", "logit-lens"), ("embedding",))
    )
    # turn it into the version 1 layout: best_labels a view, no materialised rows
    con = duckdb.connect(str(path))
    con.execute("DROP VIEW best_labels")
    con.execute("DROP TABLE best_label_rows")
    con.execute(f"CREATE VIEW best_labels AS {OLD_BEST_LABELS_VIEW}")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    assert len(db.run_query("SELECT * FROM best_labels", path).rows) == 20
    db.write_label_stage(path, "b", _stage(5))  # any write migrates
    assert _materialised(path) == _reference_best(path)
    version = db.run_query("SELECT value FROM meta WHERE key = 'schema_version'", path).rows
    assert version == [(str(db.SCHEMA_VERSION),)]


def test_version_2_database_gains_the_firing_bound_on_write(tmp_path):
    path = tmp_path / "labels.duckdb"
    db.write_label_stage(path, "a", _stage(20, methods=("top-tokens",)))
    db.write_score_stage(path, "a", _random_scores(np.random.default_rng(1), 20, ("top-tokens",), ("embedding",)))
    con = duckdb.connect(str(path))
    con.execute("ALTER TABLE true_concepts DROP COLUMN firing_f1")
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.close()
    before = sorted(db.run_query("SELECT * FROM best_labels", path).rows)
    concepts = {
        "feature": np.array([0, 1], np.int32),
        "concept": ["fruit", ""],
        "kind": ["lexical", ""],
        "status": ["planted", "split"],
        "precision": [0.9, 0.2],
        "n_firing": [10, 12],
        "firing_f1": [0.4, 0.0],
    }
    rows = _random_scores(np.random.default_rng(2), 20, ("top-tokens",), ("embedding",))
    db.write_score_stage(
        path, "b", db.ScoreStageRows(rows.scores, rows.summary, concepts, ("top-tokens",), ("embedding",))
    )
    got = db.run_query("SELECT feature, firing_f1 FROM true_concepts WHERE run_id = 'b' ORDER BY feature", path).rows
    assert got == [(0, 0.4), (1, 0.0)]
    assert sorted(db.run_query("SELECT * FROM best_labels WHERE run_id = 'a'", path).rows) == before
    version = db.run_query("SELECT value FROM meta WHERE key = 'schema_version'", path).rows
    assert version == [(str(db.SCHEMA_VERSION),)]


def _compression(path: Path, column: str) -> set[str]:
    con = db.connect_readonly(path)
    try:
        sql = (
            "SELECT DISTINCT compression FROM pragma_storage_info('best_label_rows') "
            "WHERE column_name = ? AND segment_type = 'VARCHAR'"
        )
        return {r[0] for r in con.execute(sql, [column]).fetchall()}
    finally:
        con.close()


def test_version_3_database_gets_an_uncompressed_search_column_on_write(tmp_path):
    path = tmp_path / "labels.duckdb"
    n = 5000  # enough rows that DuckDB compresses a plain VARCHAR column
    db.write_label_stage(path, "a", _stage(n, methods=("top-tokens", "logit-lens")))
    db.write_score_stage(
        path, "a", _random_scores(np.random.default_rng(1), n, ("top-tokens", "logit-lens"), ("embedding",))
    )
    assert _compression(path, "label_lower") == {"Uncompressed"}
    before = sorted(db.run_query("SELECT * FROM best_labels", path).rows)
    # turn it into the version 3 layout: label_lower a plain (compressed) VARCHAR
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE old AS SELECT * FROM best_label_rows")
    con.execute("DROP VIEW best_labels")
    con.execute("DROP TABLE best_label_rows")
    con.execute("ALTER TABLE old RENAME TO best_label_rows")
    con.execute("CREATE VIEW best_labels AS SELECT run_id, feature, method, label, score FROM best_label_rows")
    con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    con.close()
    assert _compression(path, "label_lower") != {"Uncompressed"}
    db.write_label_stage(path, "b", _stage(5))  # any write migrates
    assert _compression(path, "label_lower") == {"Uncompressed"}
    assert sorted(db.run_query("SELECT * FROM best_labels WHERE run_id = 'a'", path).rows) == before
    version = db.run_query("SELECT value FROM meta WHERE key = 'schema_version'", path).rows
    assert version == [(str(db.SCHEMA_VERSION),)]


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT 1) TO '{out}'",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_csv_auto('/etc/passwd')",
        "INSTALL httpfs",
        "ATTACH '{out}' AS other",
        "SET enable_external_access = true",
        "EXPORT DATABASE '{out_dir}'",
    ],
)
def test_query_cannot_reach_files_extensions_or_settings(tmp_path, sql):
    path = tmp_path / "labels.duckdb"
    db.write_label_stage(path, "a", _stage(2))
    out, out_dir = tmp_path / "out.csv", tmp_path / "export"
    with pytest.raises(UserError) as err:
        db.run_query(sql.format(out=out, out_dir=out_dir), path)
    assert str(err.value).startswith("SQL error:") and "\n" not in str(err.value)
    assert not out.exists() and not out_dir.exists()


def test_query_command_sandbox_error_is_one_line(tmp_path):
    path = tmp_path / "labels.duckdb"
    db.write_label_stage(path, "a", _stage(2))
    out = tmp_path / "out.csv"
    bad = _cli("query", f"COPY (SELECT * FROM labels) TO '{out}'", "--db", str(path))
    assert bad.returncode != 0 and not out.exists()
    assert len(bad.stderr.strip().splitlines()) == 1 and bad.stderr.startswith("error:")


def test_version_4_database_gains_label_fidelity_on_write(tmp_path):
    path = tmp_path / "labels.duckdb"
    db.write_label_stage(path, "a", _stage(20, methods=("top-tokens",)))
    con = duckdb.connect(str(path))
    con.execute("ALTER TABLE labels DROP COLUMN fidelity")
    con.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    con.close()
    stage = _stage(5, methods=("describe-corpus",))
    stage.labels["fidelity"] = np.linspace(0.1, 0.5, 5)
    db.write_label_stage(path, "b", stage)  # any write migrates
    rows = db.run_query(
        "SELECT run_id, count(*), count(fidelity), max(fidelity) FROM labels GROUP BY 1 ORDER BY 1", path
    )
    assert rows.rows == [("a", 20, 0, None), ("b", 5, 5, 0.5)]
    version = db.run_query("SELECT value FROM meta WHERE key = 'schema_version'", path).rows
    assert version == [(str(db.SCHEMA_VERSION),)]


def test_version_5_database_drops_the_constant_baseline_from_best_labels_on_write(tmp_path):
    path = tmp_path / "labels.duckdb"
    methods = ("top-tokens", "constant")
    db.write_label_stage(path, "a", _stage(6, methods=methods))
    scores = db.ScoreStageRows(
        {
            "feature": np.repeat(np.arange(6, dtype=np.int32), 2),
            "method": list(methods) * 6,
            "scorer": ["embedding"] * 12,
            "value": np.tile([0.6, 0.9], 6),  # the constant label ranks first on every feature
        },
        {
            "method": list(methods),
            "scorer": ["embedding"] * 2,
            "mean": [0.6, 0.9],
            "n_scored": [6, 6],
            "n_excluded": [0, 0],
        },
        None,
        methods,
        ("embedding",),
    )
    db.write_score_stage(path, "a", scores)
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    con.execute("UPDATE best_label_rows SET method = 'constant', score = 0.9")  # as version 5 ranked them
    con.close()
    db.write_label_stage(path, "b", _stage(2, methods=("top-tokens",)))  # any write migrates
    best = db.run_query("SELECT DISTINCT method, score FROM best_labels WHERE run_id = 'a'", path).rows
    assert best == [("top-tokens", 0.6)]
    version = db.run_query("SELECT value FROM meta WHERE key = 'schema_version'", path).rows
    assert version == [(str(db.SCHEMA_VERSION),)]


def test_a_db_that_is_no_label_database_fails_before_any_work(tmp_path):
    junk = tmp_path / "junk.duckdb"
    junk.write_text("hi\n")
    with pytest.raises(UserError, match="junk.duckdb") as err:
        db.check_db_writable(junk)
    assert "\n" not in str(err.value) and ".tmp" not in str(err.value)
    newer = tmp_path / "newer.duckdb"
    db.write_label_stage(newer, "a", _stage(2))
    con = duckdb.connect(str(newer))
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(UserError, match="schema version 99"):
        db.check_db_writable(newer)
    db.check_db_writable(tmp_path / "new.duckdb")  # a database yet to be made is fine
    db.check_db_writable(newer.with_name("fresh") / "x.duckdb")  # so is one in a folder yet to be made
