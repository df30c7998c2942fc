"""The stores: the HDF5 run store (h5.py), the DuckDB labels database (db.py), atomic file writes."""

from pathlib import Path

DEFAULT_DB = Path("stores/labels.duckdb")  # the labels database, shared by every run
