"""`vmaudit plan`: the fewest guest migrations after which the fleet meets M1, M4 and M7.

    vmaudit plan FLEET_DIR --policy central.toml [--format json|text|html|sh] [--output PATH]
    vmaudit plan --check PLAN.json FLEET_DIR --policy central.toml

FLEET_DIR is the output directory of `vmaudit collect` (fleet.json and facts/). The plan needs OR-Tools
(`pip install 'vmaudit[plan]'`); `--check` does not. Exit status: 0 a plan reaching every constraint
(--check: the plan is valid), 1 no plan can reach them all (--check: the plan breaks a constraint),
2 bad input, 3 hosts not audited (the plan is partial).
"""

from __future__ import annotations

import argparse
import json
import sys

from .common import write_output

FORMATS = ("json", "text", "html", "sh")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("fleet", metavar="FLEET", help="output directory of vmaudit collect (fleet.json, facts/)")
    p.add_argument("--policy", metavar="FILE",
                   help="the central policy (default: /etc/vmaudit/policy.toml if present): limits, "
                        "[plan] pinned and drain, [inventory] path for guest labels")
    p.add_argument("--format", metavar="FMT", default="text", choices=FORMATS,
                   help="json (vmaudit-plan/1), text (default), html, or sh (the virsh migrate lines)")
    p.add_argument("--output", metavar="PATH", default="-", help="file to write, '-' for standard output")
    p.add_argument("--time-limit", metavar="S", type=float, default=60.0,
                   help="seconds the solver may take over all migration groups (default 60)")
    p.add_argument("--check", metavar="PLAN", help="verify this plan (JSON) against FLEET instead of planning")


def _check(args, fleet) -> int:
    from vmaudit.errors import InputError
    from vmaudit.fsutil import read_json
    from vmaudit.plan.verify import check_plan

    plan = read_json(args.check, "the plan", InputError)  # bounded: an endless file is refused
    problems, _ = check_plan(fleet, plan)
    if args.format == "json":
        text = json.dumps({"plan": args.check, "valid": not problems,
                           "problems": [p.as_dict() for p in problems]}, indent=1)
    else:
        from vmaudit.report.view import printable

        moves = len(plan.get("moves") or []) if isinstance(plan, dict) else 0
        head = (f"vmaudit plan --check: {args.check}: {moves} move(s), "
                + ("valid: every constraint holds" if not problems else f"{len(problems)} problem(s)"))
        text = "\n".join([printable(head)] + [printable(f"  [{p.constraint}] {p.resource}: {p.message}")
                                              for p in problems]) + "\n"
    write_output(text, args.output)
    return 1 if problems else 0


def main(args: argparse.Namespace) -> int:
    from vmaudit.errors import UsageError
    from vmaudit.plan.fleet import load_fleet
    from vmaudit.policy import load_policy

    if not args.time_limit > 0:
        raise UsageError("--time-limit must be a positive number of seconds")
    if args.check and args.format in ("html", "sh"):
        raise UsageError("--check writes text or json")
    policy = load_policy(args.policy)
    fleet = load_fleet(args.fleet, policy)
    if args.check:
        return _check(args, fleet)

    from vmaudit.plan.solver import SolverMissing, solve

    try:
        solution = solve(fleet, time_limit=args.time_limit)
    except SolverMissing as exc:
        print(f"vmaudit plan: {exc}", file=sys.stderr)
        return 2
    from vmaudit.plan.render import render_html, render_sh, render_text
    from vmaudit.plan.report import build_plan, exit_status

    plan = build_plan(fleet, policy, solution, args.time_limit)
    renderers = {"json": lambda p: json.dumps(p, indent=1), "text": render_text, "html": render_html,
                 "sh": render_sh}
    write_output(renderers[args.format](plan), args.output)
    if args.output != "-" or args.format != "text":
        obj = plan["objective"]
        print(f"vmaudit plan: {plan['status']}: {obj['moves']} move(s), lower bound "
              f"{plan['lower_bound']['moves']}, {len(plan['violations_after'])} violation(s) left",
              file=sys.stderr)
    return exit_status(plan)
