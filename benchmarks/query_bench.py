"""Query latency over a labels database holding 1M labels (and their scores).

    python benchmarks/query_bench.py --labels 1000000 --db /tmp/bench-query.duckdb

The database is filled through the store's own writer (one run: 250k features x 4 methods, each
label scored by 3 scorers) with label text drawn from a word list, then each query below is timed
three ways, 5 times each, and the median reported:

- cli: a whole `sae-translate query` process (`python -m sae_translate query SQL --db DB`, the
  same lean entry path as the console script), wall time from start to exit: what a user waits
  for at the command line (--no-cli skips it);
- cold: a fresh sandboxed read-only connection per query in this process, as `query` opens one;
- warm: one connection reused.

Beside them: the floor of a CLI process, `SELECT 1` through the CLI, bare `python -c pass` and
`python -c "import duckdb"`, and the load average before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae_translate.store import db as label_db  # noqa: E402

QUERIES = {
    "label search (ILIKE)": "SELECT feature, label, score FROM best_labels WHERE label ILIKE '%city%' LIMIT 100",
    "one feature, all methods": "SELECT method, label FROM labels WHERE run_id = 'bench' AND feature = 123456",
    "mean score per method": "SELECT method, scorer, avg(value) FROM scores GROUP BY ALL ORDER BY ALL",
    # the same means as the score stage keeps them, per run, in the same write
    "mean score per method (score_summary)": "SELECT method, scorer, mean FROM score_summary ORDER BY ALL",
    "label search (lower-cased column)": (
        "SELECT feature, label, score FROM best_label_rows WHERE label_lower LIKE '%city%' LIMIT 100"
    ),
    "top 20 best labels": "SELECT feature, label, score FROM best_labels ORDER BY score DESC LIMIT 20",
    "count best_labels": "SELECT count(*) FROM best_labels",
}
METHODS = ("translator", "top-tokens", "logit-lens", "random")
SCORERS = ("embedding", "detection", "simulation")


def fill(db: Path, n_labels: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(20_000)] + ["city", "cities", "paris", "london", "red", "dog"])
    n_features = n_labels // len(METHODS)
    features = np.repeat(np.arange(n_features), len(METHODS))
    methods = np.tile(np.array(METHODS), n_features)
    picks = rng.integers(0, len(words), size=(len(features), 3))
    labels = [" ".join(row) for row in words[picks]]
    t0 = time.perf_counter()
    with label_db.write_transaction(db) as con:
        label_db.delete_rows(con, "labels", "bench")
        label_db.insert_rows(
            con,
            "labels",
            {"feature": features, "method": methods, "label": labels, "rank": np.zeros(len(features), np.int32)},
            run_id="bench",
        )
        values = rng.random(len(features) * len(SCORERS))
        label_db.insert_rows(
            con,
            "scores",
            {
                "feature": np.repeat(features, len(SCORERS)),
                "method": np.repeat(methods, len(SCORERS)),
                "scorer": np.tile(np.array(SCORERS), len(features)),
                "value": values,
            },
            run_id="bench",
        )
        # rows are feature-major, then method, then scorer: the means per (method, scorer)
        means = values.reshape(n_features, len(METHODS), len(SCORERS)).mean(0)
        label_db.delete_rows(con, "score_summary", "bench")
        label_db.insert_rows(
            con,
            "score_summary",
            {
                "method": [m for m in METHODS for _ in SCORERS],
                "scorer": [s for _ in METHODS for s in SCORERS],
                "mean": means.reshape(-1),
                "n_scored": np.full(means.size, n_features, np.int64),
                "n_excluded": np.zeros(means.size, np.int64),
            },
            run_id="bench",
        )
        label_db.refresh_best_labels(con, "bench")  # what the label and score stages do
    return time.perf_counter() - t0


def timed(sql: str, db: Path, cold: bool, repeats: int = 5) -> float:
    times = []
    con = None if cold else label_db.connect_readonly(db)
    for _ in range(repeats):
        t0 = time.perf_counter()
        if cold:
            label_db.run_query(sql, db)
        else:
            con.execute(sql).fetchall()
        times.append(time.perf_counter() - t0)
    if con is not None:
        con.close()
    return statistics.median(times)


def timed_process(args: list[str], repeats: int = 5) -> float:
    """Median wall time of a fresh Python process running `args`, start to exit."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timed_cli(sql: str, db: Path, repeats: int = 5) -> float:
    return timed_process(["-m", "sae_translate", "query", sql, "--db", str(db)], repeats)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, default=1_000_000)
    p.add_argument("--db", default="/tmp/bench-query.duckdb")
    p.add_argument("--no-cli", action="store_true", help="skip timing whole `sae-translate query` processes")
    args = p.parse_args()
    db = Path(args.db)
    db.unlink(missing_ok=True)
    rows: dict = {"labels": args.labels, "load_before": load()}
    write_s = fill(db, args.labels)
    rows |= {"write_s": round(write_s, 2), "db_mib": round(db.stat().st_size / 2**20, 1)}
    for name, sql in QUERIES.items():
        rows[name] = {}
        if not args.no_cli:
            rows[name]["cli_ms"] = round(1000 * timed_cli(sql, db))
        rows[name]["cold_ms"] = round(1000 * timed(sql, db, cold=True), 1)
        rows[name]["warm_ms"] = round(1000 * timed(sql, db, cold=False), 1)
    if not args.no_cli:
        rows["floor"] = {
            "cli_ms(SELECT 1)": round(1000 * timed_cli("SELECT 1", db)),
            "python_ms(pass)": round(1000 * timed_process(["-c", "pass"])),
            "python_ms(import duckdb)": round(1000 * timed_process(["-c", "import duckdb"])),
        }
    rows["load_after"] = load()
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
