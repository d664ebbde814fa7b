"""What a polkit .rules file (JavaScript, read by collectors/access.py as `polkit_rules`) decides about
libvirt, judged from its text without running it: comments stripped with strings kept intact, every
polkit.addRule() body taken with balanced parentheses, and per rule the libvirt actions it names, the
results it returns (YES, AUTH_SELF, AUTH_SELF_KEEP grant), the groups and users it tests, and what
cannot be judged from text (computed identities, negations, polkit.spawn). Used by M6-POLKIT.
"""

from __future__ import annotations

import re

_JS_TOKEN = re.compile(r"""//[^\n]*|/\*.*?\*/|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`(?:[^`\\]|\\.)*`""", re.S)


GRANT_RESULTS = ("YES", "AUTH_SELF", "AUTH_SELF_KEEP")


def strip_js_comments(text: str) -> str:
    return _JS_TOKEN.sub(lambda m: "" if m.group().startswith("/") else m.group(), text)


def _calls(text: str, name: str) -> list[str]:
    """The argument text of every `name(...)` call (parentheses balanced, strings skipped)."""
    out = []
    for m in re.finditer(re.escape(name) + r"\s*\(", text):
        depth, i, quote = 1, m.end(), None
        while i < len(text) and depth:
            c = text[i]
            if quote:
                if c == "\\":
                    i += 1
                elif c == quote:
                    quote = None
            elif c in "\"'`":
                quote = c
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            i += 1
        out.append(text[m.end():i - 1])
    return out


def analyse_polkit_rule(body: str) -> dict:
    """What one polkit.addRule() function does for libvirt's actions, as far as text can tell.

    {"libvirt": bool, "grants": [...], "groups": [...], "users": [...], "unconditional": bool,
     "unjudgeable": [reasons]}
    """
    out = {"libvirt": bool(re.search(r"org(\\)?\.libvirt", body)), "grants": [], "groups": [], "users": [],
           "unconditional": False, "unjudgeable": []}
    if not out["libvirt"]:
        return out
    grants = set(re.findall(r"polkit\.Result\.(YES|AUTH_SELF_KEEP|AUTH_SELF)\b", body))
    grants |= {g.upper() for g in re.findall(r"return\s+[\"'](yes|auth_self_keep|auth_self)[\"']", body)}
    out["grants"] = sorted(grants)
    if not grants:
        if re.search(r"return\s+(?!polkit\.Result\.)(?![\"'])[A-Za-z_$]", body):
            out["unjudgeable"].append("returns a computed value")
        return out
    q = r"([\"'])((?:(?!\1).)*)\1"
    groups = re.findall(r"subject\.isInGroup\(\s*" + q + r"\s*\)", body)
    users = re.findall(r"subject\.user\s*===?\s*" + q, body) + re.findall(q + r"\s*===?\s*subject\.user", body)
    out["groups"] = sorted({g for _, g in groups})
    out["users"] = sorted({u for _, u in users})
    n_group_refs = len(re.findall(r"subject\.isInGroup\b", body))
    n_user_refs = len(re.findall(r"subject\.user\b", body))
    if n_group_refs > len(groups) or n_user_refs > len(users):
        out["unjudgeable"].append("subject.isInGroup/subject.user used other than with a literal name")
    if re.search(r"!\s*subject\.isInGroup|subject\.user\s*!==?", body):
        out["unjudgeable"].append("negated identity condition")
    for construct in ("subject.isInNetGroup", "polkit.spawn", "subject.system_unit"):
        if construct in body:
            out["unjudgeable"].append(f"uses {construct}")
    if not (n_group_refs or n_user_refs or "isInNetGroup" in body or "system_unit" in body):
        out["unconditional"] = True
    return out


def polkit_rules_of(text: str) -> list[dict]:
    """The analysed addRule() calls of one rules file (plus addAdminRule identities)."""
    clean = strip_js_comments(text)
    rules = [analyse_polkit_rule(body) for body in _calls(clean, "polkit.addRule")]
    return rules
