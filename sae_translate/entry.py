"""The console entry point.

`sae-translate query` is what a user runs per keystroke while browsing labels, so it takes a lean
path: argparse and the store's query function, nothing else (typer alone brings pydantic and the
stages' config modules, ~250 ms of start-up against ~100 ms for Python plus duckdb). Every other
command, and `query --help`, goes through the typer app in cli.py, which also documents `query`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from sae_translate.errors import UserError, error_line

QUERY_FORMATS = ("table", "csv", "json")


def query_parser() -> argparse.ArgumentParser:
    """The same argument and options as cli.query (tests/test_cli.py checks they agree)."""
    p = argparse.ArgumentParser(prog="sae-translate query", add_help=False)
    p.add_argument("sql")
    p.add_argument("--db", default=os.path.join("stores", "labels.duckdb"))
    p.add_argument("--format", dest="fmt", default="table")
    return p


def run_query_command(argv: Sequence[str]) -> int:
    """`sae-translate query SQL [--db DB] [--format F]`; errors are one line and exit code 1."""
    args = query_parser().parse_args(list(argv))  # a usage error exits 2, as typer's would
    try:
        if args.fmt not in QUERY_FORMATS:
            raise UserError(f"unknown --format {args.fmt!r}; use table, csv or json")
        from sae_translate.store.db import format_result, run_query

        print(format_result(run_query(args.sql, args.db), args.fmt))
    except (UserError, OSError) as e:
        print(error_line(e), file=sys.stderr)
        return 1
    return 0


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["query"] and not {"--help", "-h"} & set(args[1:]):
        sys.exit(run_query_command(args[1:]))
    from sae_translate.cli import main as cli_main

    cli_main()
