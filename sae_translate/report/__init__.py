"""The report: one offline HTML page of plotly figures about a run, its labels and its translator."""

from sae_translate.report.base import ReportConfig, ReportResult
from sae_translate.report.page import write_report

__all__ = ["ReportConfig", "ReportResult", "write_report"]
