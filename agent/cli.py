"""The `vmaudit` command line: parses arguments and hands over to one module of vmaudit.commands.

Command modules are imported only when their command runs, so `vmaudit run` never loads what central
collection needs (paramiko) and start-up stays short.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__, gcpolicy
from .termsafe import CleanFormatter, clean

# command -> (module, one-line help). Each module has add_arguments(parser) and main(args) -> int.
COMMANDS = {
    "run": ("vmaudit.commands.run", "audit this host (or a saved snapshot) and write reports"),
    "facts": ("vmaudit.commands.facts", "collect facts only and write them as one JSON snapshot"),
    "checks": ("vmaudit.commands.checks", "list the check catalogue"),
    "explain": ("vmaudit.commands.explain", "explain one check: rationale, rule, sources, remediation"),
    "diff": ("vmaudit.commands.diff", "what changed between two reports"),
    "history": ("vmaudit.commands.history", "list past runs kept in the state directory"),
    "agent": ("vmaudit.commands.agent", "audit on a schedule, for hosts without systemd timers"),
    "collect": ("vmaudit.commands.collect", "collect and audit many hosts over SSH"),
    "fleet": ("vmaudit.commands.fleet", "evaluate the fleet's latest facts (a directory or the store) offline"),
    "plan": ("vmaudit.commands.plan", "the fewest migrations that make a collected fleet meet M1, M4 and M7"),
    "policy": ("vmaudit.commands.policy", "validate a policy file (vmaudit policy check FILE)"),
}


ONE_SHOT = ("run", "facts")  # commands that audit once and exit (not agent/collect, which run long)


from .errors import InputError, UsageError  # noqa: E402,F401 - UsageError re-exported

DESCRIPTION = """\
Audit a KVM/libvirt hypervisor against eight hardening measures (security zones, a simple VMM, a
hardened host, limited consolidation, guests' own measures, few administrators, restricted
mobility, registered and maintained guests). vmaudit opens libvirt read-only and changes nothing
on the host it audits; run it as root to read every fact."""

EPILOG = """\
common uses:
  vmaudit run                                  audit this host; summary on the terminal
  vmaudit run --format html --output report.html
                                               the full report with evidence, one file
  vmaudit explain M2-IOMMU                     why a check matters, how it decides, the fix
  vmaudit policy check /etc/vmaudit/policy.toml
                                               validate a policy before deploying it
  vmaudit run --state-dir /var/lib/vmaudit     keep reports and history; then vmaudit diff --last

exit status of run: 0 nothing to fix, 1 failures found, 2 bad usage or input (nothing audited),
3 some evidence could not be collected; with --state-dir also 4 (lock busy) and 5 (state unwritable).

'vmaudit COMMAND --help' describes each command. The policy: docs/policy.md; the checks:
'vmaudit checks' and docs/checks.md; the reports: docs/reports.md (in the vmaudit repository)."""


RUN_EPILOG = """\
exit status: 0 no unwaived failure at or above --fail-on and no error; 1 such failures; 2 bad usage or
an invalid policy, inventory or snapshot (nothing audited, a one-line reason); 3 no such failures, but
some evidence could not be collected; with --state-dir: 4 the state directory's lock stayed busy
longer than --wait, 5 the state directory cannot be written."""


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the selected command's module is imported to define its options."""
    parser = argparse.ArgumentParser(prog="vmaudit", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vmaudit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=RUN_EPILOG if name == "run" else None)
        p.add_argument("-v", "--verbose", action="store_true", help="log progress and timings")
        p.add_argument("-q", "--quiet", action="store_true", help="log errors only")
        p.set_defaults(_module=module)
        if name == selected:
            importlib.import_module(module).add_arguments(p)
    return parser


def setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    # log lines quote host names, guest names and remote errors: one line each, no terminal control
    handler.setFormatter(CleanFormatter("vmaudit: %(levelname)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    selected = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(selected if selected in COMMANDS else None).parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    for stream in (sys.stdout, sys.stderr):  # host file names need not be UTF-8: never crash on them
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if args.command in ONE_SHOT:
        # A one-shot audit allocates hundreds of thousands of acyclic objects (XML trees, findings) and
        # exits: the cyclic garbage collector would only rescan them (about 15 % of a large run).
        gcpolicy.disable_for_process()
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except InputError as exc:
        print(f"vmaudit {args.command}: {clean(exc)}", file=sys.stderr)  # may quote an input file
        return 2
    except KeyboardInterrupt:
        print(f"vmaudit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        # A defect must not exit 1, which means "failures found" to scripts (and is a success for
        # vmaudit.service, SuccessExitStatus=1 3): nothing was audited, say so in one line.
        logging.getLogger("vmaudit").debug("internal error", exc_info=True)
        print(f"vmaudit {args.command}: internal error (a bug in vmaudit; -v shows where): "
              f"{type(exc).__name__}: {clean(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
