"""The plan as text for a terminal, as a shell script of `virsh migrate` lines, and as an HTML page.

Guest and host names are data: in text they are stripped of control characters, in the script every
one is a single shell word (shlex.quote) and comments carry none of them, in HTML they are escaped by
Jinja2's autoescape. vmaudit never runs the script.
"""

from __future__ import annotations

import shlex

from vmaudit.report.view import printable


def _spare(m: dict) -> str:
    room = m["spare_room"]
    parts = [f"{room[k]} {u}" for k, u in (("memory_mib", "MiB"), ("vcpus", "vCPUs"), ("guests", "guest slot(s)"))
             if room.get(k)]
    return f"needs spare room on {room['host']}: {', '.join(parts)} beyond its capacity"


def render_text(plan: dict) -> str:
    p = printable
    obj, lb = plan["objective"], plan["lower_bound"]
    lines = [f"vmaudit plan: {plan['status']}: {obj['moves']} move(s), {obj['memory_mib']} MiB moved; "
             f"lower bound {lb['moves']} move(s); "
             f"{'proved optimal' if plan['proved_optimal'] else 'not proved optimal'} "
             f"({len(plan['groups'])} migration group(s), {plan['solver']['seconds']:.1f} s)"]
    if plan["unaudited"]:
        lines.append(f"partial: {len(plan['unaudited'])} host(s) not audited; nothing moves to or from them:")
        lines += [f"  {p(u['host'])}: {p(u['reason'])}" for u in plan["unaudited"]]
    if plan["infeasible"]:
        lines.append("cannot be met:")
        lines += [f"  [{v['constraint']}] {p(v['message'])}" for v in plan["infeasible"]]
    lines.append(f"violations: {len(plan['violations_before'])} before, {len(plan['violations_after'])} after")
    lines += [f"  left: [{v['constraint']}] {p(v['message'])}" for v in plan["violations_after"]]
    if plan["moves"]:
        lines.append("moves, in order:")
    for m in plan["moves"]:
        kind = "live" if m["live"] else "offline"
        line = (f"  {m['step']:>4}. {p(m['guest'])}: {p(m['from'])} -> {p(m['to'])} "
                f"({kind}, {m['memory_mib']} MiB)")
        if m.get("spare_room"):
            line += f"  ! {p(_spare(m))}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _uri(host: dict) -> str:
    addr = str(host.get("address") or host["name"])
    if ":" in addr and not addr.startswith("["):
        addr = f"[{addr}]"  # an IPv6 address
    if host.get("port"):
        addr += f":{int(host['port'])}"
    return f"qemu+ssh://{addr}/system"


def _comment(text: str) -> str:
    """A comment line that can hold no shell: printable ASCII only, no newline."""
    return "# " + "".join(ch if " " <= ch <= "~" else "?" for ch in text)


def render_sh(plan: dict) -> str:
    hosts = {h["name"]: h for h in plan["hosts"]}
    lines = ["#!/bin/sh", _comment(f"vmaudit plan ({plan['status']}): {len(plan['moves'])} migration(s) in order; "
                                   "review before running. vmaudit never runs these."),
             "set -eu"]
    for m in plan["moves"]:
        if m.get("spare_room"):
            lines.append(_comment(f"step {m['step']} needs spare room on its destination; make it before this step"))
        src, dst = hosts[m["from"]], hosts[m["to"]]
        words = ["virsh", "-c", _uri(src), "migrate"]
        words += ["--live", "--persistent", "--undefinesource"] if m["live"] else \
                 ["--offline", "--persistent", "--undefinesource"]
        words += [m["guest"], _uri(dst)]
        lines.append(" ".join(shlex.quote(w) for w in words))
    return "\n".join(lines) + "\n"


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1b1b}
h1{font-size:1.5em;margin:0 0 .3em}h2{font-size:1.2em;margin:1.6em 0 .5em}h3{font-size:1.05em;margin:1em 0 .3em}
table{border-collapse:collapse;width:100%;margin:.4em 0}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.n{text-align:right;white-space:nowrap}
.meta{color:#555}.banner{background:#fff3cd;border:1px solid #e0c060;padding:.5em;margin:.5em 0}
.bad{background:#f8d7da}.spare{color:#a00;font-weight:600}code{font-size:.92em;word-break:break-all}
"""


def html_context(plan: dict) -> dict:
    from vmaudit.report.html import csp_hash

    zones: dict[str, list[dict]] = {}
    for h in plan["hosts"]:
        zones.setdefault(h.get("zone") or "(no declared zone)", []).append(h)
    bad_hosts = {v["resource"][5:] for v in plan["violations_after"] if v["resource"].startswith("host:")}
    return {"p": plan, "zones": sorted(zones.items()), "bad": bad_hosts, "css": CSS, "spare": _spare,
            "csp": f"default-src 'none'; style-src '{csp_hash(CSS)}'; img-src data:; base-uri 'none'; "
                   f"form-action 'none'"}


def render_html(plan: dict) -> str:
    from markupsafe import Markup

    from vmaudit.report.html import environment

    ctx = html_context(plan)
    ctx["css"] = Markup(ctx["css"])  # our own constant, allowed by its hash
    return environment().get_template("plan.html.j2").render(ctx)


__all__ = ["render_text", "render_sh", "render_html"]
