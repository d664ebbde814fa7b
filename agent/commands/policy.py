"""`vmaudit policy check FILE`: validate a policy file (and the inventory it names) without auditing."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="policy_action", metavar="ACTION")
    sub.required = True
    check = sub.add_parser("check", help="validate a policy file: exit 0 when vmaudit accepts it, else 2 "
                           "with the reason (file, line, problem) on one line",
                           description="Validate a policy file as `vmaudit run --policy FILE` would read it, "
                           "the inventory it names included. Exit 0: valid; exit 2: the reason on one line. "
                           "Reference of every key: docs/policy.md.")
    check.add_argument("file", metavar="FILE", help="the policy (TOML), e.g. /etc/vmaudit/policy.toml")


def main(args: argparse.Namespace) -> int:
    from vmaudit.policy import load_policy

    policy = load_policy(args.file)  # PolicyError: the CLI prints its one line and exits 2
    settings = sum(len(keys) for keys in policy.values.values())
    print(f"{args.file}: valid ({settings} setting(s), {len(policy.waivers)} waiver(s); "
          "everything else at its default)")
    return 0
