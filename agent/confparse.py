"""Parsers for the configuration syntaxes a hypervisor uses, shared by the collectors.

libvirt's own syntax (qemu.conf, libvirtd.conf, virtqemud.conf, …; libvirt's virconf.c):
    key = value              value: "string" | 'string' | integer | [list, of, values]
    # comments               lists may span lines and carry comments between their items
Shell-style environment files (/etc/default/libvirtd, /etc/sysconfig/libvirtd): KEY=value, KEY="value".
"""

from __future__ import annotations

import re
import shlex


class ConfSyntaxError(ValueError):
    pass


_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r]+) |
    (?P<comment>\#[^\n]*) |
    (?P<nl>\n) |
    (?P<dq>"(?:[^"\\\n]|\\.)*") |
    (?P<sq>'[^'\n]*') |
    (?P<num>[+-]?(?:0[xX][0-9a-fA-F]+|\d+)) |
    (?P<name>[A-Za-z_][A-Za-z0-9_.]*) |
    (?P<punct>[=\[\],;])
""", re.X)


def _tokens(text: str):
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ConfSyntaxError(f"line {line}: unexpected {text[pos]!r}")
        kind = m.lastgroup
        if kind == "nl":
            line += 1
        if kind not in ("ws", "comment"):
            yield kind, m.group(), line
        pos = m.end()
    yield "eof", "", line


def parse_libvirt_conf(text: str) -> dict:
    """Parse libvirt config syntax into {key: str | int | list}. Raises ConfSyntaxError with the line."""
    toks = list(_tokens(text))
    i, out = 0, {}

    def skip_nl(i: int) -> int:
        while toks[i][0] == "nl":
            i += 1
        return i

    def value(i: int):
        kind, text_, line = toks[i]
        if kind == "dq":
            return bytes(text_[1:-1], "utf-8").decode("unicode_escape") if "\\" in text_ else text_[1:-1], i + 1
        if kind == "sq":
            return text_[1:-1], i + 1
        if kind == "num":
            return int(text_, 0), i + 1
        if text_ == "[":
            items, i = [], skip_nl(i + 1)
            while toks[i][1] != "]":
                item, i = value(i)
                items.append(item)
                i = skip_nl(i)
                if toks[i][1] == ",":
                    i = skip_nl(i + 1)
                elif toks[i][1] != "]":
                    raise ConfSyntaxError(f"line {toks[i][2]}: expected ',' or ']' in a list")
            return items, i + 1
        raise ConfSyntaxError(f"line {line}: expected a value, found {text_ or 'end of file'!r}")

    while True:
        i = skip_nl(i)
        kind, name, line = toks[i]
        if kind == "eof":
            return out
        if kind != "name":
            raise ConfSyntaxError(f"line {line}: expected a setting name, found {name!r}")
        if toks[i + 1][1] != "=":
            raise ConfSyntaxError(f"line {line}: expected '=' after {name}")
        val, i = value(i + 2)
        out[name] = val
        if toks[i][1] == ";":
            i += 1
        if toks[i][0] not in ("nl", "eof"):
            raise ConfSyntaxError(f"line {toks[i][2]}: unexpected {toks[i][1]!r} after the value of {name}")


def parse_env_file(text: str) -> dict:
    """Parse a shell-style KEY=value file (no execution). Later assignments win, as in the shell."""
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if not m:
            continue
        try:
            parts = shlex.split(m.group(2), comments=True)
        except ValueError:
            parts = [m.group(2)]
        out[m.group(1)] = " ".join(parts)
    return out
