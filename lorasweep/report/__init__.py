"""Reports: collect (store -> rows), select (the validation rule), render (terminal, Markdown,
HTML, PNG, CSV, JSON), reference (the study's curves), export (the tuned adapters)."""

from .collect import collect_rows
from .reference import compare, study_curves
from .render import render_terminal, write_report
from .select import SELECTION_RULE, VariantSummary, summarise

__all__ = ["SELECTION_RULE", "VariantSummary", "collect_rows", "compare", "render_terminal",
           "study_curves", "summarise", "write_report"]
