"""The DuckDB label database: schema, whole-run writes, read-only queries.

Many runs share one database file (default ``stores/labels.duckdb``). DuckDB lets only one
process open a file for writing, and while it does no other process can open it at all, not
even read-only. So writers never open the live file: a write takes an exclusive lock file,
copies the database to a temporary file beside it, writes there in one transaction, closes it
(DuckDB checkpoints on close) and atomically renames it over the live file. Readers open the
live file read-only at any time and see either the whole old state or the whole new one.

Every stage write replaces that run's rows (delete + insert in the same transaction), so a
rerun never duplicates rows.

``best_labels`` is a view over the table ``best_label_rows``, which holds the best label of every
feature (plus ``label_lower``, for case-insensitive search with LIKE) and is recomputed for a run
in the same transaction as any write of its labels or scores (``refresh_best_labels``). Ranking
labels x scores on every query took most of a second at a million labels; reading the
materialised rows takes milliseconds.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import duckdb

from sae_translate.errors import UserError
from sae_translate.store import DEFAULT_DB
from sae_translate.store.atomic import check_writable

if TYPE_CHECKING:  # imported where rows are written: a read-only query does not need it
    import pyarrow as pa

SCHEMA_VERSION = 7
# Version 1 had best_labels as a ranking view and labels without rules, version 2 no firing bound
# beside the planted concepts, version 3 a compressed label_lower, version 4 no label fidelity,
# version 5 the constant baseline among the best labels, version 6 no best label for a feature
# without an embedding score; opening any of them for writing adds the missing columns (empty) and
# rebuilds the materialised best labels.
MIGRATES_FROM = (1, 2, 3, 4, 5, 6)

# The scorer that ranks labels in the best_labels view: the embedding AUROC is defined for
# every label (detection/simulation are 0 for labels whose words never occur in the windows).
RANKING_SCORER = "embedding"
FALLBACK_SCORER = "detection"  # ranks the labels of a feature the ranking scorer leaves out

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta(key VARCHAR, value VARCHAR);
CREATE TABLE IF NOT EXISTS runs(
    run_id VARCHAR, path VARCHAR, model VARCHAR, hook VARCHAR, sae VARCHAR, dataset VARCHAR,
    d_sae INTEGER, n_tokens BIGINT, world VARCHAR, created_at TIMESTAMP, config JSON);
CREATE TABLE IF NOT EXISTS features(
    run_id VARCHAR, feature INTEGER, alive BOOLEAN, count BIGINT, frequency DOUBLE,
    max_activation REAL, mean_activation REAL, heldout_windows BIGINT);
CREATE TABLE IF NOT EXISTS labels(
    run_id VARCHAR, feature INTEGER, method VARCHAR, label VARCHAR, rank INTEGER,
    rule_kind VARCHAR, rule JSON, fidelity DOUBLE);
CREATE TABLE IF NOT EXISTS examples(
    run_id VARCHAR, feature INTEGER, kind VARCHAR, rank INTEGER, activation REAL, text VARCHAR,
    seq BIGINT, start INTEGER, stop INTEGER);
CREATE TABLE IF NOT EXISTS scores(
    run_id VARCHAR, feature INTEGER, method VARCHAR, scorer VARCHAR, value DOUBLE);
CREATE TABLE IF NOT EXISTS score_summary(
    run_id VARCHAR, method VARCHAR, scorer VARCHAR, mean DOUBLE, n_scored BIGINT,
    n_excluded BIGINT);
CREATE TABLE IF NOT EXISTS true_concepts(
    run_id VARCHAR, feature INTEGER, concept VARCHAR, kind VARCHAR, status VARCHAR,
    precision DOUBLE, n_firing BIGINT, firing_f1 DOUBLE);
CREATE TABLE IF NOT EXISTS best_label_rows(
    run_id VARCHAR, feature INTEGER, method VARCHAR, label VARCHAR, score DOUBLE,
    label_lower VARCHAR USING COMPRESSION uncompressed);
CREATE OR REPLACE VIEW best_labels AS
    SELECT run_id, feature, method, label, score FROM best_label_rows;
"""

# The best label of each feature of the runs selected by {where}: the highest ranking-scorer
# value among the rank-0 labels. The floor baselines take no part: `random` is another feature's
# label and `constant` one label for every feature (embedding AUROC can still rank "the" first for
# a feature on room words, and "the" describes nothing). A feature the ranking scorer cannot score
# (one firing in nearly every held-out window leaves no silent windows to rank against; a run
# labelled without scorers) keeps a best label, with a NULL score: the one detection ranks first,
# then the describer's own fidelity on train tokens. Remaining ties go to the method name.
BEST_LABELS_SQL = f"""
    SELECT l.run_id, l.feature, l.method, l.label, s.value AS score
    FROM labels l
    LEFT JOIN scores s
      ON s.run_id = l.run_id AND s.feature = l.feature AND s.method = l.method AND s.scorer = '{RANKING_SCORER}'
    LEFT JOIN scores d
      ON d.run_id = l.run_id AND d.feature = l.feature AND d.method = l.method AND d.scorer = '{FALLBACK_SCORER}'
    WHERE l.rank = 0 AND l.method NOT IN ('random', 'constant') AND {{where}}
    QUALIFY row_number() OVER (
        PARTITION BY l.run_id, l.feature
        ORDER BY s.value DESC NULLS LAST, d.value DESC NULLS LAST, l.fidelity DESC NULLS LAST, l.method) = 1
"""

# Column order of each table, for building inserts by name.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "runs": ("run_id", "path", "model", "hook", "sae", "dataset", "d_sae", "n_tokens", "world", "created_at", "config"),
    "features": (
        "run_id",
        "feature",
        "alive",
        "count",
        "frequency",
        "max_activation",
        "mean_activation",
        "heldout_windows",
    ),
    "labels": ("run_id", "feature", "method", "label", "rank", "rule_kind", "rule", "fidelity"),
    "examples": ("run_id", "feature", "kind", "rank", "activation", "text", "seq", "start", "stop"),
    "scores": ("run_id", "feature", "method", "scorer", "value"),
    "score_summary": ("run_id", "method", "scorer", "mean", "n_scored", "n_excluded"),
    "true_concepts": ("run_id", "feature", "concept", "kind", "status", "precision", "n_firing", "firing_f1"),
}

Rows: TypeAlias = "pa.Table | Mapping[str, Any]"


def _lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


def check_db_writable(db: str | Path) -> None:
    """Fail before any work on a database path that a write could not go to (a directory, or a
    folder that cannot be written); what a writer would leave anyway, the lock file, is all it creates."""
    db = Path(db)
    if db.is_dir():
        raise UserError(f"{db} is a directory; pass a database file as --db")
    if not db.parent.is_dir():
        check_writable(db.parent, "--db")  # created by the write
        return
    try:
        open(_lock_path(db), "a").close()
    except OSError as e:
        raise UserError(f"cannot write {db}: {e.strerror or e}; choose another --db") from e
    if db.is_file():  # a file that is no DuckDB database, or one of another schema version
        con = connect_readonly(db)
        try:
            _check_version(_schema_version(con), db)
        finally:
            con.close()


def _check_version(version: int | None, db: Path) -> None:
    if version is not None and version != SCHEMA_VERSION and version not in MIGRATES_FROM:
        raise UserError(
            f"{db} has label schema version {version}, this package writes {SCHEMA_VERSION}; write to a new --db file"
        )


@contextmanager
def _writer_lock(db: Path, timeout_s: float) -> Iterator[None]:
    """Exclusive lock between writer processes (readers never take it)."""
    try:
        lock_file = open(_lock_path(db), "a+")
    except OSError as e:
        raise UserError(f"cannot write {db}: {e.strerror or e}; choose another --db") from e
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(
                        f"another process has been writing {db} for over {timeout_s:.0f}s; "
                        "wait for it to finish and retry"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        lock_file.close()  # closing releases the flock


def ensure_schema(con: duckdb.DuckDBPyConnection, db: Path) -> None:
    """Create the tables, or bring an older database up to this version (on the private copy, so
    the live file changes only when the whole write succeeds)."""
    version = _schema_version(con)
    _check_version(version, db)
    if version in MIGRATES_FROM:  # rebuilt below with this version's column types
        con.execute("DROP VIEW IF EXISTS best_labels")
        con.execute("DROP TABLE IF EXISTS best_label_rows")
    con.execute(SCHEMA_SQL)
    if version is None:
        con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
    elif version in MIGRATES_FROM:
        for table, column, kind in (
            ("labels", "rule_kind", "VARCHAR"),
            ("labels", "rule", "JSON"),
            ("labels", "fidelity", "DOUBLE"),
            ("true_concepts", "kind", "VARCHAR"),
            ("true_concepts", "status", "VARCHAR"),
            ("true_concepts", "firing_f1", "DOUBLE"),
        ):
            con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")
        _insert_best_labels(con, "TRUE", [])
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)])


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    """The first column of the first row (None when there is no row)."""
    row = con.execute(sql, params or []).fetchone()
    return None if row is None else row[0]


def _schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
    has_meta = _scalar(con, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'")
    if not has_meta:
        return None
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else int(row[0])


def _insert_best_labels(con: duckdb.DuckDBPyConnection, where: str, params: list[Any]) -> None:
    # Sorted so that a plain scan of best_labels returns features in order; label_lower lets a
    # search use LIKE on a lower-cased copy instead of lower-casing every label per query, and is
    # stored uncompressed since a search scans all of it (half the time of the default FSST at 1M
    # labels, for ~20 bytes a feature).
    con.execute(
        f"INSERT INTO best_label_rows SELECT *, lower(label) "
        f"FROM ({BEST_LABELS_SQL.format(where=where)}) ORDER BY run_id, feature",
        params,
    )


def refresh_best_labels(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Recompute the run's materialised best labels from its labels and scores.

    Call it inside the write transaction of anything that changes the run's labels or scores,
    so that readers never see best labels out of step with them.
    """
    con.execute("DELETE FROM best_label_rows WHERE run_id = ?", [run_id])
    _insert_best_labels(con, "l.run_id = ?", [run_id])


@contextmanager
def write_transaction(db: str | Path = DEFAULT_DB, timeout_s: float = 600.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open a private copy of ``db`` inside one transaction; on success it replaces ``db``.

    Readers keep seeing the previous complete state until the atomic rename.
    """
    db = Path(db)
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the directory of {db}: {e.strerror}; choose another --db") from e
    with _writer_lock(db, timeout_s):
        for stale in db.parent.glob(f".{db.name}.tmp-*"):  # left by a killed writer
            stale.unlink(missing_ok=True)
        tmp = db.with_name(f".{db.name}.tmp-{os.getpid()}")
        try:
            if db.exists():
                shutil.copyfile(db, tmp)
                wal = db.with_name(db.name + ".wal")
                if wal.exists():  # left by a foreign writer: replayed when tmp is opened
                    shutil.copyfile(wal, tmp.with_name(tmp.name + ".wal"))
            con = duckdb.connect(str(tmp))
            try:
                ensure_schema(con, db)
                con.execute("BEGIN TRANSACTION")
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.close()
                raise
            con.close()
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, db)
            _fsync_dir(db.parent)
        except duckdb.Error as e:
            raise UserError(f"cannot write {db}: {str(e).splitlines()[0]}") from e
        except OSError as e:
            raise UserError(f"cannot write {db}: {e.strerror or e}; check the disk and permissions") from e
        finally:
            _remove_db_files(tmp)


def _remove_db_files(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _as_arrow(rows: Rows) -> pa.Table:
    import pyarrow as pa

    if isinstance(rows, pa.Table):
        return rows
    return pa.table({k: (v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v)) for k, v in rows.items()})


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Rows, **constants: Any) -> int:
    """Bulk insert ``rows`` (columns by name) plus constant columns such as ``run_id``."""
    import pyarrow as pa

    data = _as_arrow(rows)
    if data.num_rows == 0:
        return 0
    for name, value in constants.items():
        data = data.append_column(name, pa.array([value] * data.num_rows))
    unknown = set(data.column_names) - set(TABLE_COLUMNS[table])
    if unknown:
        raise ValueError(f"{table} has no columns {sorted(unknown)}")
    view = f"_rows_{table}"
    con.register(view, data)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {view}")
    finally:
        con.unregister(view)
    return data.num_rows


def delete_rows(
    con: duckdb.DuckDBPyConnection, table: str, run_id: str, column: str | None = None, values: Sequence[str] = ()
) -> None:
    """Delete a run's rows of ``table``, optionally only where ``column`` is in ``values``."""
    if column is None:
        con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
    elif values:
        con.execute(
            f"DELETE FROM {table} WHERE run_id = ? AND {column} IN (SELECT unnest(?::VARCHAR[]))",
            [run_id, list(values)],
        )


@dataclass
class LabelStageRows:
    """Everything the label stage writes for one run."""

    run: Mapping[str, Any]  # one row of ``runs`` (without run_id)
    features: Rows
    labels: Rows
    examples: Rows
    methods: Sequence[str]  # label methods produced by this write


def write_label_stage(db: str | Path, run_id: str, rows: LabelStageRows) -> None:
    """Replace the run's row, features, examples, and its labels of ``rows.methods``.

    Scores of the relabelled methods are dropped too: they scored the old labels.
    """
    with write_transaction(db) as con:
        for table in ("runs", "features", "examples"):
            delete_rows(con, table, run_id)
        for table in ("labels", "scores", "score_summary"):
            delete_rows(con, table, run_id, "method", rows.methods)
        insert_rows(con, "runs", {k: [v] for k, v in rows.run.items()}, run_id=run_id)
        insert_rows(con, "features", rows.features, run_id=run_id)
        insert_rows(con, "labels", rows.labels, run_id=run_id)
        insert_rows(con, "examples", rows.examples, run_id=run_id)
        refresh_best_labels(con, run_id)


@dataclass
class ScoreStageRows:
    """Everything the score stage writes for one run."""

    scores: Rows
    summary: Rows
    true_concepts: Rows | None  # None when the run has no toy world
    methods: Sequence[str]  # label methods that were scored
    scorers: Sequence[str]  # scorers that were run


def write_score_stage(db: str | Path, run_id: str, rows: ScoreStageRows) -> None:
    """Replace the run's scores and summaries of ``rows.methods`` x ``rows.scorers``
    (and its true concepts when given)."""
    with write_transaction(db) as con:
        for table in ("scores", "score_summary"):
            con.execute(
                f"DELETE FROM {table} WHERE run_id = ? AND method IN "
                "(SELECT unnest(?::VARCHAR[])) AND scorer IN (SELECT unnest(?::VARCHAR[]))",
                [run_id, list(rows.methods), list(rows.scorers)],
            )
        insert_rows(con, "scores", rows.scores, run_id=run_id)
        insert_rows(con, "score_summary", rows.summary, run_id=run_id)
        if rows.true_concepts is not None:
            delete_rows(con, "true_concepts", run_id)
            insert_rows(con, "true_concepts", rows.true_concepts, run_id=run_id)
        refresh_best_labels(con, run_id)


# Read-only connections may only read the database: no files, URLs or extensions (COPY TO,
# read_csv, read_text, ATTACH, INSTALL), and no SET that could turn that back on.
SANDBOX_CONFIG: Mapping[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}


def connect_readonly(db: str | Path = DEFAULT_DB) -> duckdb.DuckDBPyConnection:
    """A sandboxed read-only connection to the live database (never blocks on a writer)."""
    db = Path(db)
    if not db.is_file():
        raise UserError(f"no label database at {db}; run `sae-translate label --run stores/RUN` first or pass --db")
    try:
        return duckdb.connect(str(db), read_only=True, config=dict(SANDBOX_CONFIG))
    except duckdb.Error as e:
        raise UserError(f"cannot open {db} read-only: {str(e).splitlines()[0]}") from e


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def run_query(sql: str, db: str | Path = DEFAULT_DB) -> QueryResult:
    """Run one SQL statement on a read-only connection; SQL errors become one-line UserErrors."""
    con = connect_readonly(db)
    try:
        n = len(con.extract_statements(sql))
        if n > 1:  # DuckDB would run them all and show the last result only
            raise UserError(f"one SQL statement at a time (got {n})")
        rel = con.execute(sql)
        if rel is None:  # nothing but whitespace, comments or semicolons
            raise UserError("empty SQL statement")
        if rel.description is None:
            return QueryResult([], [])
        columns = [d[0] for d in rel.description]
        return QueryResult(columns, rel.fetchall())
    except duckdb.Error as e:
        message = " ".join(line.strip() for line in str(e).splitlines()[:1])
        raise UserError(f"SQL error: {message}") from e
    finally:
        con.close()


def _cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def format_result(result: QueryResult, fmt: str = "table") -> str:
    """Render a query result as an aligned text table, CSV (header row first) or JSON records."""
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([["" if v is None else _cell(v) for v in row] for row in result.rows])
        return buf.getvalue().rstrip("\n")
    if fmt == "json":
        records = [{c: _cell(v) for c, v in zip(result.columns, row)} for row in result.rows]
        return json.dumps(records, indent=1, ensure_ascii=False)
    if fmt == "table":
        return _text_table(result)
    raise UserError(f"unknown format {fmt!r}; use table, csv or json")


def _text_table(result: QueryResult) -> str:
    def show(v: Any) -> str:
        if v is None:
            return "NULL"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("\n", " ")

    cells = [[show(v) for v in row] for row in result.rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(result.columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(result.columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    lines.append(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")
    return "\n".join(lines)
