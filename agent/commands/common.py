"""Options and steps shared by `run`, `facts` and `agent`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from vmaudit.engine import SEVERITIES

log = logging.getLogger("vmaudit")


def add_collect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect", metavar="URI", default=None,
                   help="libvirt URI, opened read-only (default: qemu:///system; with --root DIR other "
                        "than /, none: the image's guest definitions are read from its files)")
    p.add_argument("--root", metavar="DIR", default="/",
                   help="read file-derived facts under DIR instead of / (live facts are then skipped)")


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", metavar="FILE", help="policy TOML (default: /etc/vmaudit/policy.toml if present)")
    p.add_argument("--format", metavar="FMT", action="append", dest="formats",
                   help="text, json, html, junit, prometheus; may be repeated (default: text)")
    p.add_argument("--output", metavar="PATH", default="-",
                   help="file for the report, '-' for standard output; a directory with several formats")
    p.add_argument("--fail-on", metavar="SEV", default="low", choices=SEVERITIES,
                   help="lowest severity of an unwaived fail that makes the exit status 1 (default: low)")
    p.add_argument("--online", action="store_true",
                   help="also ask the package manager about pending updates (slow, may use the network)")


def write_output(text, output: str) -> None:
    """Write text (or an iterable of text pieces) to standard output, or atomically to a file (a reader
    never sees half a report)."""
    from vmaudit.errors import UsageError
    from vmaudit.fsutil import atomic_write

    if output == "-":
        last = ""
        for chunk in [text] if isinstance(text, str) else text:
            sys.stdout.write(chunk)
            last = chunk or last
        if not last.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
        return
    try:
        atomic_write(output, text)  # FILE_MODE (0640): findings are sensitive
    except OSError as exc:
        raise UsageError(f"{output}: cannot write report: {exc.strerror or exc}") from None


def output_targets(formats: list[str], output: str) -> list[tuple[str, str]]:
    """[(format, path)] for the requested formats; several formats need --output DIR."""
    from vmaudit.errors import UsageError
    from vmaudit.report import FORMATS, filename

    for fmt in formats:
        if fmt not in FORMATS:
            raise UsageError(f"--format {fmt}: unknown format (known: {', '.join(FORMATS)})")
    if len(formats) == 1:
        return [(formats[0], output)]
    if output == "-":
        raise UsageError("several --format values need --output DIR (one file per format)")
    from vmaudit.fsutil import make_dir

    try:
        make_dir(output, parents=True)
    except OSError as exc:
        raise UsageError(f"{output}: cannot create the report directory: {exc.strerror or exc}") from None
    return [(fmt, os.path.join(output, filename(fmt))) for fmt in formats]
