"""The report: one offline HTML page of plotly figures about a run, its labels and its translator.

Importing the package is light (its config, for the command line); plotly is imported on first
use of the other names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sae_translate.report.config import ReportConfig

if TYPE_CHECKING:
    from sae_translate.report.base import ReportResult
    from sae_translate.report.page import write_report

_LAZY = {"ReportResult": "base", "write_report": "page"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = ["ReportConfig", "ReportResult", "write_report"]
