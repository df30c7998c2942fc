"""Query latency over a labels database holding 1M labels (and their scores).

    python benchmarks/query_bench.py --labels 1000000 --db /tmp/bench-query.duckdb

The database is filled through the store's own writer (one run: 250k features x 4 methods, each
label scored by 3 scorers) with label text drawn from a word list, then each query below is run
cold (fresh read-only connection, as `sae-translate query` does) and warm, 5 times each; the
median is reported. With --cli each query also runs 3 times as a whole `sae-translate query`
process, next to `SELECT 1` (the cost of starting Python and importing the CLI).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_translate.store import db as label_db  # noqa: E402

QUERIES = {
    "label search (ILIKE)": "SELECT feature, label, score FROM best_labels WHERE label ILIKE '%city%' LIMIT 100",
    "one feature, all methods": "SELECT method, label FROM labels WHERE run_id = 'bench' AND feature = 123456",
    "mean score per method": "SELECT method, scorer, avg(value) FROM scores GROUP BY ALL ORDER BY ALL",
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
        label_db.insert_rows(
            con,
            "scores",
            {
                "feature": np.repeat(features, len(SCORERS)),
                "method": np.repeat(methods, len(SCORERS)),
                "scorer": np.tile(np.array(SCORERS), len(features)),
                "value": rng.random(len(features) * len(SCORERS)),
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


def timed_cli(sql: str, db: Path, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "sae_translate", "query", sql, "--db", str(db)],
            check=True,
            capture_output=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, default=1_000_000)
    p.add_argument("--db", default="/tmp/bench-query.duckdb")
    p.add_argument("--cli", action="store_true", help="also time whole CLI processes")
    args = p.parse_args()
    db = Path(args.db)
    db.unlink(missing_ok=True)
    write_s = fill(db, args.labels)
    rows = {"labels": args.labels, "write_s": round(write_s, 2), "db_mib": round(db.stat().st_size / 2**20, 1)}
    for name, sql in QUERIES.items():
        rows[name] = {
            "cold_ms": round(1000 * timed(sql, db, cold=True), 1),
            "warm_ms": round(1000 * timed(sql, db, cold=False), 1),
        }
        if args.cli:
            rows[name]["cli_process_ms"] = round(1000 * timed_cli(sql, db))
    if args.cli:
        rows["cli_process_ms(SELECT 1)"] = round(1000 * timed_cli("SELECT 1", db))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
