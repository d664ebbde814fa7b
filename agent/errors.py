"""The exit-2 family: input vmaudit cannot use. str() of each is the one line printed to the user,
naming the file (and line) and what is wrong; `vmaudit` exits with status 2 and no traceback.

Every module raises these from here (never from another command's module), so no module has to
import policy.py or cli.py just for an exception class.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad usage or a bad input file: exit status 2 with a one-line message."""


class UsageError(InputError):
    """Bad command-line usage (a combination of options, an unknown check ID)."""


class PolicyError(InputError):
    """A policy or waiver file that cannot be used."""


class InventoryError(PolicyError):
    """A guest or fleet inventory that cannot be used (a kind of policy input: the policy names the
    guest inventory)."""


class SnapshotError(InputError):
    """A facts snapshot that is not one (bad JSON, wrong schema, over the limits)."""


class SSHConfigError(InputError):
    """An OpenSSH client configuration that cannot be read."""


class RootError(InputError):
    """An audited root (--root) that cannot be used."""
