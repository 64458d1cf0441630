"""HTML reports of a patient's twin: standalone pages with inline SVG plots."""

from __future__ import annotations

from cartwin.report.html import build_context, render_report, write_report

__all__ = ["build_context", "render_report", "write_report"]
