"""Reports: collect (store -> tidy rows -> summaries) and render (terminal, md, csv, json, png)."""

from .collect import collect_rows, study_status, summarise
from .render import render_terminal, write_report

__all__ = ["collect_rows", "render_terminal", "study_status", "summarise", "write_report"]
