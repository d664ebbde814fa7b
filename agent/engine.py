"""The check registry and the evaluation of a facts snapshot into findings.

A check is a plain function decorated with `@check(...)`; its docstring is what `vmaudit explain` prints.
Two scopes:

    @check("M2-TCG-GUEST", severity="high", title=..., remediation=..., scope="guest")
    def tcg_guest(guest, facts, policy): yield Result(...)

    @check("M2-IOMMU", severity="high", title=..., remediation=...)
    def iommu(facts, policy): yield Result(...)

Checks are pure: they read the snapshot and the policy and yield `Result`s, never touching the system.
A check that hits missing evidence raises (via `need()`/`Facts.source()`) and the engine turns that
into an `error` (or `skip`) finding for it; per-guest checks fail that way for one guest only.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import logging
import operator
import pkgutil
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Callable, Iterable

from . import gcpolicy
from .facts import EvidenceMissing, Facts, Guest, NotApplicable, unguarded

log = logging.getLogger("vmaudit.engine")

SEVERITIES = ("critical", "high", "medium", "low", "info")
STATUSES = ("pass", "fail", "warn", "error", "skip")
MEASURES = ("M1", "M2", "M3", "M4", "M5", "M6", "M7", "M8")
_ID = re.compile(r"^(M[1-8]|F)-[A-Z0-9]+(-[A-Z0-9]+)*$")


@dataclass(frozen=True)
class CheckSpec:
    """What the catalogue says about one check (immutable; results live elsewhere)."""

    id: str
    measure: str
    severity: str
    title: str
    remediation: str
    scope: str  # "host" or "guest" (or "fleet" for F-* checks)
    func: Callable[..., Iterable[Result]]
    sources: str = ""
    definitions: str = "both"  # guest checks: which definition(s) of a guest it judges (DEFINITIONS)

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.func.__doc__ or "")


@dataclass
class Result:
    """One verdict a check yields; the engine adds the check's metadata to make it a finding."""

    status: str
    message: str
    resource: str = "host"
    evidence: dict = field(default_factory=dict)
    expected: str | None = None
    actual: str | None = None
    severity: str | None = None  # overrides the check's default severity for this finding
    remediation: str | None = None  # a fix naming this resource (e.g. its seclabel); else the catalogue's

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"bad status {self.status!r}")
        if self.severity is not None and self.severity not in SEVERITIES:
            raise ValueError(f"bad severity {self.severity!r}")


REGISTRY: dict[str, CheckSpec] = {}


# Which definition(s) of a guest a guest check judges (CHECKS.md, "Which definition a guest check
# judges"); see evaluate_guest_check.
DEFINITIONS = {
    "both": "the live definition (now) and the persistent one (after the next start), each that exists",
    "live": "the live definition only (state that exists while the guest runs)",
    "persistent": "the persistent definition, else the live one of a transient guest",
    "guest": "the guest's record and labels, not a definition (called once per guest)",
}


def check(id: str, *, severity: str, title: str, remediation: str, scope: str = "host",
          sources: str = "", definitions: str = "both") -> Callable:
    """Register a check function under its catalogue ID. `definitions` (guest checks): see DEFINITIONS."""
    if not _ID.match(id):
        raise ValueError(f"check ID {id!r} is not of the form M<n>-SLUG or F-SLUG")
    if severity not in SEVERITIES:
        raise ValueError(f"{id}: bad severity {severity!r}")
    if scope not in ("host", "guest", "fleet"):
        raise ValueError(f"{id}: bad scope {scope!r}")
    if not title.strip() or not remediation.strip():
        raise ValueError(f"{id}: title and remediation are required")
    if definitions not in DEFINITIONS:
        raise ValueError(f"{id}: bad definitions {definitions!r} (known: {', '.join(DEFINITIONS)})")

    def register(func: Callable) -> Callable:
        if id in REGISTRY and REGISTRY[id].func.__qualname__ != func.__qualname__:
            raise ValueError(f"check {id} registered twice")
        if not (func.__doc__ or "").strip():
            raise ValueError(f"{id}: the check function needs a docstring (vmaudit explain prints it)")
        REGISTRY[id] = CheckSpec(id=id, measure=id.split("-", 1)[0], severity=severity, title=title,
                                 remediation=remediation, scope=scope, func=func, sources=sources,
                                 definitions=definitions)
        return func

    return register


def load_checks() -> dict[str, CheckSpec]:
    """Import every module of vmaudit.checks (each registers its checks) and return the registry."""
    import vmaudit.checks as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
    return dict(sorted(REGISTRY.items()))


# --- evaluation ---------------------------------------------------------------------------------

_FINDING_ORDER = operator.itemgetter("check_id", "resource")  # the report's order of findings

def make_finding(spec: CheckSpec, r: Result) -> dict:
    out: dict[str, Any] = {
        "check_id": spec.id, "measure": spec.measure, "title": spec.title,
        "status": r.status, "severity": r.severity or spec.severity,
        "resource": r.resource, "message": r.message, "evidence": unguarded(r.evidence),
    }
    if r.expected is not None:
        out["expected"] = r.expected
    if r.actual is not None:
        out["actual"] = r.actual
    out["remediation"] = r.remediation or spec.remediation
    return out


def _missing(spec: CheckSpec, exc: Exception, resource: str = "host") -> Result:
    status = "skip" if isinstance(exc, NotApplicable) else "error"
    what = "not applicable" if status == "skip" else "evidence missing"
    return Result(status, f"{what}: {exc}", resource=resource, evidence={"reason": str(exc)})


# The message prefix of a finding whose check raised something other than missing evidence (a defect);
# tests/vmtest.py refuses such findings so that a test expecting `error` cannot pass on a crash.
INTERNAL_ERROR = "internal error in check"


def run_check(spec: CheckSpec, args: tuple, resource: str) -> list[Result]:
    """Call a check; results it yielded before missing evidence (or a defect) stopped it are kept."""
    out: list[Result] = []
    try:
        out.extend(spec.func(*args))
    except (EvidenceMissing, NotApplicable) as exc:
        out.append(_missing(spec, exc, resource))
    except Exception as exc:  # a defect in one check must not hide the other checks' results
        log.debug("check %s raised", spec.id, exc_info=True)  # -v: where the defect is
        out.append(Result("error", f"{INTERNAL_ERROR}: {type(exc).__name__}: {exc}", resource=resource,
                          evidence={"exception": f"{type(exc).__name__}: {exc}"}))
    return out


# "Worst status wins" when the two definitions of a guest disagree: a proven problem over missing
# evidence, missing evidence over a warning, anything over a pass, a pass over not applicable.
_WORST = {"fail": 4, "error": 3, "warn": 2, "pass": 1, "skip": 0}
WHEN = {"live": "now", "persistent": "after the next start"}


def evaluate_guest_check(spec: CheckSpec, guest: Guest, facts: Facts, policy: Any,
                         defs: dict | Exception | None = None) -> list[Result]:
    """One guest check on the definition(s) of `guest` it declares (spec.definitions), as findings for
    the guest: with two definitions judged, one finding per resource saying when it holds. `defs`:
    guest.definitions(), or the exception it raised, when the caller has asked already."""
    if spec.definitions == "guest":
        return run_check(spec, (guest, facts, policy), guest.resource)
    if defs is None:
        defs = _definitions_of(guest)
    if isinstance(defs, Exception):
        return [_missing(spec, defs, guest.resource)]
    if spec.definitions == "live":
        if "live" not in defs:
            reason = ("only a running libvirt knows a guest's live state" if guest.state_marker is not None
                      else f"guest is {guest.state}: this check judges a running guest's live state")
            return [Result("skip", f"not applicable: {reason}", guest.resource, {"reason": reason})]
        return run_check(spec, (defs["live"], facts, policy), guest.resource)
    if spec.definitions == "persistent":
        return run_check(spec, (guest.will_run, facts, policy), guest.resource)
    if len(defs) == 1:
        (only,) = defs.values()
        return run_check(spec, (only, facts, policy), guest.resource)
    return merge_definitions(run_check(spec, (defs["live"], facts, policy), guest.resource),
                             run_check(spec, (defs["persistent"], facts, policy), guest.resource))


def _definitions_of(guest: Guest) -> dict | Exception:
    try:
        return guest.definitions()
    except (EvidenceMissing, NotApplicable) as exc:
        return exc


def merge_definitions(live: list[Result], persistent: list[Result]) -> list[Result]:
    """Pair the results of the live and the persistent definition by resource (in order) and make one
    of each pair: the worse status, a message saying "now", "after the next start" or both, and the
    evidence of both where they differ."""
    if len(live) == 1 and len(persistent) == 1 and live[0].resource == persistent[0].resource:
        return [_merge_pair(live[0], persistent[0])]  # the usual case: one verdict a definition
    def keyed(results: list[Result]) -> dict:
        out: dict = {}
        seen: dict = {}
        for r in results:
            n = seen[r.resource] = seen.get(r.resource, -1) + 1
            out[(r.resource, n)] = r
        return out

    now, later = keyed(live), keyed(persistent)
    merged = []
    for key in list(now) + [k for k in later if k not in now]:
        merged.append(_merge_pair(now.get(key), later.get(key)))
    return merged


def _merge_pair(a: Result | None, b: Result | None) -> Result:
    if a is None or b is None:  # only one definition has this resource
        r, which = (a, "live") if b is None else (b, "persistent")
        return Result(r.status, f"{r.message} ({WHEN[which]})", r.resource,
                      {**r.evidence, "definition": WHEN[which]}, r.expected, r.actual, r.severity,
                      r.remediation)
    if a.status == b.status and a.message == b.message and a.evidence == b.evidence:
        return Result(a.status, f"{a.message} (now and after the next start)", a.resource, a.evidence,
                      a.expected, a.actual, a.severity or b.severity, a.remediation or b.remediation)
    worst, other = (a, b) if _WORST[a.status] >= _WORST[b.status] else (b, a)
    w_when, o_when = (WHEN["live"], WHEN["persistent"]) if worst is a else (WHEN["persistent"], WHEN["live"])
    if a.status == b.status and a.message == b.message:
        message = f"{a.message} (now and after the next start)"
    elif a.status == b.status:
        message = f"now: {a.message}; after the next start: {b.message}"
    else:
        message = f"{w_when}: {worst.message} ({o_when}: {other.status}, {other.message})"
    evidence = dict(worst.evidence)
    evidence["now"] = {"status": a.status, "message": a.message, "evidence": a.evidence}
    evidence["after_next_start"] = {"status": b.status, "message": b.message, "evidence": b.evidence}
    severity = worst.severity
    if a.status == b.status and a.severity and b.severity:
        severity = min(a.severity, b.severity, key=SEVERITIES.index)
    return Result(worst.status, message, worst.resource, evidence, worst.expected, worst.actual, severity,
                  worst.remediation or other.remediation)


def evaluate(facts: Facts, policy: Any, checks: dict[str, CheckSpec] | None = None,
             only: Iterable[str] | None = None) -> list[dict]:
    """Run every host and guest check over the snapshot; return findings sorted by check ID, resource.

    A check that raises anything other than missing evidence is a bug in vmaudit: it is reported as an
    `error` finding for that check (with the exception) rather than aborting the whole audit.
    """
    checks = checks or load_checks()
    if only is not None:
        wanted = set(only)
        checks = {k: v for k, v in checks.items() if k in wanted}
    guest_checks = [c for c in checks.values() if c.scope == "guest"]
    host_checks = [c for c in checks.values() if c.scope == "host"]
    # Each result becomes its finding at once: holding 100,000s of Result objects until the end would
    # add their memory to the findings' at the peak.
    findings: list[dict] = []

    try:
        guests = facts.labelled_guests(getattr(policy, "inventory", None))
        guest_error: Exception | None = None
    except (EvidenceMissing, NotApplicable) as exc:
        guests, guest_error = [], exc
    for guest in guests:
        defs = _definitions_of(guest)
        for spec in guest_checks:
            for r in evaluate_guest_check(spec, guest, facts, policy, defs):
                findings.append(make_finding(spec, r))
        guest.settle()  # the shared views are cached; the tree can go
    if guest_error is not None:
        findings.extend(make_finding(spec, _missing(spec, guest_error)) for spec in guest_checks)

    # A check that keeps an exception (`value, gap = facts.lookup(...)`, perhaps raising it again) makes
    # a reference cycle: exception -> traceback -> frame -> `gap`; the frames hold `facts`, so every
    # guest of the snapshot. Collected here, where the collector does not run (vmaudit.gcpolicy).
    with gcpolicy.cycles_collected():
        for spec in host_checks:
            findings.extend(make_finding(spec, r) for r in run_check(spec, (facts, policy), "host"))

    findings.sort(key=_FINDING_ORDER)
    return findings


# --- waivers and the report ---------------------------------------------------------------------

def apply_waivers(findings: list[dict], waivers: list, today: date | None = None) -> list[dict]:
    """Attach matching, unexpired waivers to findings that are not passes. Returns the expired waivers."""
    today = today or datetime.now(timezone.utc).date()
    active = [w for w in waivers if w.expires >= today]
    expired = [w for w in waivers if w.expires < today]
    if active:
        for f in findings:
            if f["status"] == "pass":
                continue
            for w in active:
                if fnmatch.fnmatchcase(f["check_id"], w.check) and fnmatch.fnmatchcase(f["resource"], w.resource):
                    f["waiver"] = w.as_dict()
                    break
    return [w.as_dict() for w in expired]


def summarize(findings: list[dict]) -> dict:
    def empty() -> dict:
        return {s: 0 for s in STATUSES} | {"waived": 0}

    summary = empty()
    by_measure = {m: empty() for m in MEASURES}
    for f in findings:
        key = "waived" if "waiver" in f else f["status"]
        summary[key] += 1
        counts = by_measure.get(f["measure"])
        if counts is None:
            counts = by_measure[f["measure"]] = empty()
        counts[key] += 1
    summary["by_measure"] = by_measure
    return summary


def exit_status(findings: list[dict], fail_on: str) -> int:
    """CONTRACT.md: 1 for an unwaived fail at or above fail_on, else 3 if any error, else 0."""
    threshold = SEVERITIES.index(fail_on)
    unwaived = [f for f in findings if "waiver" not in f]
    if any(f["status"] == "fail" and SEVERITIES.index(f["severity"]) <= threshold for f in unwaived):
        return 1
    if any(f["status"] == "error" for f in unwaived):
        return 3
    return 0


__all__ = ["check", "Result", "CheckSpec", "REGISTRY", "DEFINITIONS", "evaluate_guest_check", "merge_definitions",
           "load_checks", "evaluate", "run_check", "make_finding",
           "apply_waivers",
           "summarize", "exit_status", "Guest", "Facts", "SEVERITIES", "STATUSES", "MEASURES"]
