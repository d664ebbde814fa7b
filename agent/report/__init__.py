"""Report renderers: one module per format, each with `render(report: dict, *, color: bool) -> str`.

The report dict is the JSON report of CONTRACT.md; renderers never see facts or policy.
"""

from __future__ import annotations

import importlib
from typing import Iterable

# format -> (module, file name used when writing several formats into a directory)
FORMATS = {
    "text": ("vmaudit.report.text", "report.txt"),
    "json": ("vmaudit.report.json_report", "report.json"),
    "html": ("vmaudit.report.html", "report.html"),
    "junit": ("vmaudit.report.junit", "report.junit.xml"),
    "prometheus": ("vmaudit.report.prometheus", "vmaudit.prom"),
}


def filename(fmt: str) -> str:
    return FORMATS[fmt][1]


def render(fmt: str, report: dict, *, color: bool = False) -> str:
    return importlib.import_module(FORMATS[fmt][0]).render(report, color=color)


def render_chunks(fmt: str, report: dict, *, color: bool = False) -> Iterable[str]:
    """The rendered report as pieces, for writing large reports without building them whole."""
    module = importlib.import_module(FORMATS[fmt][0])
    if hasattr(module, "render_chunks"):
        return module.render_chunks(report, color=color)
    return [module.render(report, color=color)]
