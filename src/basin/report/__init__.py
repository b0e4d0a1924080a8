"""Presentation: the HTML/Markdown report builder, the standard figures and text tables.

Everything here only formats numbers computed elsewhere (``basin.robustness``, the
reproductions); nothing in this package measures anything, so it sits above the library
layers and below the reproductions in the import graph.
"""

from basin.report.builder import FIGURE_DPI, NOTE_KINDS, Report, format_cell

__all__ = ["FIGURE_DPI", "NOTE_KINDS", "Report", "format_cell"]
