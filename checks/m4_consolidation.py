"""M4: limit consolidation — the host is a single point of failure, so cap its guests and its vCPU
overcommit, and keep redundant pairs and many independent services off the same host."""

from __future__ import annotations

from vmaudit.capacity import host_cpus
from vmaudit.engine import Result, check
from vmaudit.facts import EvidenceMissing, need

from ._guests import try_labels


@check("M4-GUEST-COUNT", severity="medium",
       title="Number of guests on the host",
       remediation="Spread the guests over more hosts, or raise [limits] max_running_guests after a "
                   "risk decision.",
       sources="listAllDomains(): defined guests and their state; policy [limits] max_running_guests")
def guest_count(facts, policy):
    """Every guest on a host fails with it, and every guest shares its attack surface. Capping the number
    of guests caps the damage of one host failure or one VM escape.

    Rule: running guests (any active state: running, paused, …) above [limits] max_running_guests
    (default 20) -> fail; defined guests (running or shut off) above twice that -> warn. Under --root
    (an image) only the defined guests are judged; the running part is skip.
    Sources: libvirt's list of all domains with their state.
    """
    guests = facts.guests()
    limit = policy.get("limits", "max_running_guests")
    offline = [g for g in guests if g.state_marker is not None]
    if offline:  # an image under --root: which guests run, only its running libvirt knows
        evidence = {"defined": len(guests), "max_defined_guests": 2 * limit,
                    "running": f"not known: {offline[0].state_marker.get('not_collected') or 'state unavailable'}"}
        if len(guests) > 2 * limit:
            yield Result("warn", f"{len(guests)} guests are defined, more than twice the running limit "
                         f"({2 * limit})", "host", evidence, expected=f"<= {2 * limit} defined",
                         actual=str(len(guests)))
        else:
            need(offline[0].state_marker, "running guests")
        return
    running = sorted(g.name for g in guests if g.active)
    evidence = {"running": len(running), "defined": len(guests), "max_running_guests": limit,
                "max_defined_guests": 2 * limit, "running_guests": running}
    unknown = sorted(g.name for g in guests if "state_error" in g.record)
    if unknown:
        evidence["state_unknown"] = unknown
    if len(running) > limit:
        yield Result("fail", f"{len(running)} guests are running, more than the limit of {limit}", "host",
                     evidence, expected=f"<= {limit} running", actual=str(len(running)))
    elif len(guests) > 2 * limit:
        yield Result("warn", f"{len(guests)} guests are defined, more than twice the running limit "
                     f"({2 * limit})", "host", evidence, expected=f"<= {2 * limit} defined",
                     actual=str(len(guests)))
    elif unknown and len(running) + len(unknown) > limit:
        yield Result("error", f"the state of {len(unknown)} guest(s) is unknown and could push the running "
                     f"count over {limit}", "host", evidence)
    else:
        yield Result("pass", f"{len(running)} running and {len(guests)} defined guests (limit {limit} running)",
                     "host", evidence, expected=f"<= {limit} running", actual=str(len(running)))


@check("M4-CPU-OVERCOMMIT", severity="medium",
       title="vCPU overcommit of the host's CPUs",
       remediation="Lower the overcommit: fewer or smaller guests per host, or raise [limits] cpu_overcommit "
                   "after a capacity decision.",
       sources="/domain/vcpu (current) of running guests; libvirt nodeinfo cpus, else /proc/cpuinfo; "
               "policy [limits] cpu_overcommit")
def cpu_overcommit(facts, policy):
    """Heavily overcommitted vCPUs make one host carry more services than it can serve when it matters,
    and make a noisy or compromised guest starve the others: consolidation beyond what the hardware
    backs is exactly what M4 limits.

    Rule: the sum of the vCPUs (current count) of the running guests divided by the host's logical CPUs
    above [limits] cpu_overcommit (default 4.0) -> warn. The sum is taken now (live definitions) and
    after the guests' next start (persistent definitions); the larger counts. Under --root -> skip.
    Sources: each running guest's <vcpu> (its current attribute when set); the host's logical CPUs from
    libvirt's node info, else /proc/cpuinfo.
    """
    every = facts.guests()
    for g in every:
        if g.state_marker is not None:  # an image under --root: which guests run is not known
            need(g.state_marker, "running guests")
    guests = [g for g in every if g.active]
    cpus, cpu_source = host_cpus(facts)
    limit = float(policy.get("limits", "cpu_overcommit"))
    now = later = 0
    per_guest: dict[str, int] = {}
    after_start: dict[str, int] = {}
    unknown: dict[str, str] = {}
    for g in guests:
        try:  # now (the live definition) and after the next start (the persistent one)
            vcpus, next_vcpus = g.vcpus, g.will_run.vcpus
        except (EvidenceMissing, ValueError) as exc:
            unknown[g.name] = str(exc)
            continue
        per_guest[g.name] = vcpus
        if next_vcpus != vcpus:
            after_start[g.name] = next_vcpus
        now, later = now + vcpus, later + next_vcpus
    total = max(now, later)
    ratio = round(total / cpus, 2)
    evidence = {"running_vcpus": total, "host_cpus": cpus, "host_cpus_source": cpu_source, "ratio": ratio,
                "cpu_overcommit": limit, "vcpus": per_guest}
    if after_start:
        evidence.update({"vcpus_after_next_start": after_start, "running_vcpus_now": now,
                         "running_vcpus_after_next_start": later})
    if unknown:
        evidence["unknown"] = unknown
    if ratio > limit:
        yield Result("warn", f"running guests have {total} vCPUs on {cpus} host CPUs: ratio {ratio:g} above "
                     f"{limit:g}", "host", evidence, expected=f"<= {limit:g}", actual=f"{ratio:g}")
    elif unknown:
        yield Result("error", f"the vCPUs of {len(unknown)} running guest(s) are unknown", "host", evidence)
    else:
        yield Result("pass", f"running guests have {total} vCPUs on {cpus} host CPUs (ratio {ratio:g}, "
                     f"limit {limit:g})", "host", evidence, expected=f"<= {limit:g}", actual=f"{ratio:g}")


def _label_groups(facts, key: str) -> tuple[dict, dict]:
    """({label value: [guest names]}, {guest: reason its labels are unknown})."""
    groups: dict[str, list[str]] = {}
    unreadable: dict[str, str] = {}
    for g in facts.guests():
        labels, reason = try_labels(g)
        if labels is None:
            unreadable[g.name] = reason
        elif labels.get(key):
            groups.setdefault(labels[key], []).append(g.name)
    return {k: sorted(v) for k, v in sorted(groups.items())}, unreadable


@check("M4-REDUNDANCY", severity="high",
       title="Redundant guests on this host",
       remediation="Place the members of a redundancy group on different hosts (anti-affinity rules in the "
                   "placement or cluster manager).",
       sources="vmaudit metadata <redundancy> (urn:vmaudit:guest:1) or the inventory")
def redundancy(facts, policy):
    """A redundant pair on one host is not redundant: the host is the single point of failure both
    members share, and one escape reaches both. Shut-off members count (a cold standby on the same host
    fails with it).

    Rule: two or more defined guests of one redundancy group on this host -> fail.
    Sources: each guest's <redundancy> label (vmaudit metadata, else the inventory).
    """
    groups, unreadable = _label_groups(facts, "redundancy")
    shared = {k: v for k, v in groups.items() if len(v) > 1}
    evidence = {"groups": groups, "shared": shared}
    if unreadable:
        evidence["unreadable"] = unreadable
    if shared:
        desc = "; ".join(f"{k}: {', '.join(v)}" for k, v in shared.items())
        yield Result("fail", f"members of one redundancy group share this host: {desc}", "host", evidence,
                     expected="one member per group per host", actual=desc)
    elif unreadable:
        yield Result("error", f"the redundancy group of {len(unreadable)} guest(s) is unknown (XML unreadable)",
                     "host", evidence)
    elif not groups:
        yield Result("pass", "no guest on this host declares a redundancy group", "host", evidence)
    else:
        yield Result("pass", f"{len(groups)} redundancy group(s), one member each on this host", "host",
                     evidence)


@check("M4-INDEPENDENT-SERVICES", severity="low",
       title="Number of independent services on the host",
       remediation="Group dependent systems on a host and spread independent services over hosts; set "
                   "[limits] max_services to the number one host may carry.",
       sources="vmaudit metadata <service> (urn:vmaudit:guest:1) or the inventory; policy [limits] max_services")
def independent_services(facts, policy):
    """Guests of unrelated services on one host make its failure (or compromise) an outage of all of
    them at once; a host should carry systems that depend on each other anyway.

    Rule: more distinct services than [limits] max_services -> warn. With no max_services in the policy
    (the default) there is no limit: the services are listed and the result is pass.
    Sources: each guest's <service> label (vmaudit metadata, else the inventory).
    """
    services, unreadable = _label_groups(facts, "service")
    limit = policy.get("limits", "max_services")
    evidence = {"services": services, "count": len(services), "max_services": limit}
    if unreadable:
        evidence["unreadable"] = unreadable
    if limit is not None and len(services) > limit:
        yield Result("warn", f"{len(services)} independent services share this host, more than {limit}: "
                     f"{', '.join(services)}", "host", evidence, expected=f"<= {limit}",
                     actual=str(len(services)))
    elif limit is not None and unreadable:
        yield Result("error", f"the service of {len(unreadable)} guest(s) is unknown (XML unreadable)",
                     "host", evidence)
    else:
        note = f" (limit {limit})" if limit is not None else " (no limit set in [limits] max_services)"
        yield Result("pass", f"{len(services)} service(s) on this host{note}", "host", evidence,
                     expected=f"<= {limit}" if limit is not None else None, actual=str(len(services)))
