"""known_hosts host patterns (sshd(8) SSH_KNOWN_HOSTS FILE FORMAT, ssh_config(5) PATTERNS) as OpenSSH reads
them, proved against the real OpenSSH tools: `ssh-keygen -F` for which lines match a name, the real `ssh`
client (StrictHostKeyChecking=yes) against the lab's sshd for the accept/refuse verdict, and
`vmaudit collect` through wildcard, negated and CHANGED wildcard lines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sshlab import ADDR, FLEET, PORT

from vmaudit.fleet.ssh import (
    Connector,
    KnownHosts,
    SSHOptions,
    Target,
    _ip_name,
    check_host_key,
    match_hostname,
)

VMAUDIT = str(Path(sys.executable).parent / "vmaudit")


def keygen(path: Path, kind: str = "ed25519") -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "t", "-f", str(path)], check=True,
                   capture_output=True, timeout=30)
    return " ".join((path.parent / (path.name + ".pub")).read_text().split()[:2])


def blob_of(key: str) -> bytes:
    import base64

    return base64.b64decode(key.split()[1])


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return {"a": keygen(d / "a"), "b": keygen(d / "b"), "ec": keygen(d / "ec", "ecdsa")}


def test_pattern_rules():
    assert match_hostname("hv01.example.org", "*.example.org")
    assert match_hostname("HV01.Example.ORG", "*.EXAMPLE.org")            # both sides case-insensitive
    assert match_hostname("hv7.example.org", "hv?.example.org")
    assert not match_hostname("hv17.example.org", "hv?.example.org")
    assert not match_hostname("bad.example.org", "!bad.example.org,*.example.org")
    assert not match_hostname("bad.example.org", "*.example.org,!bad.example.org")   # order does not matter
    assert match_hostname("good.example.org", "!bad.example.org,*.example.org")
    assert not match_hostname("good.example.org", "!bad.example.org")    # negation alone never matches
    assert match_hostname("[10.0.0.7]:2222", "[10.0.0.*]:2222")
    assert match_hostname("[10.0.0.7]:2222", "[10.0.0.7]:*")
    assert not match_hostname("10.0.0.7", "[10.0.0.*]:2222")
    assert not match_hostname("[hv01.example.org]:2222", "*.example.org")   # brackets are literal
    assert match_hostname("10.0.0.5", "hv01,10.0.0.5")
    assert not match_hostname("x.example.org", "x.example.org." )
    assert not match_hostname("a" * 1100, "a" * 1100)                      # OpenSSH's 1024-byte buffer


def test_matching_lines_equal_ssh_keygen_F(tmp_path, keys):
    a, b = keys["a"], keys["b"]
    plain = tmp_path / "plain"
    plain.write_text(f"hashed-one.example.org {a}\n[hashed-two.example.org]:2222 {b}\n")
    # ssh-keygen -H hashes the lines without wildcards: real |1|salt|hash names
    subprocess.run(["ssh-keygen", "-H", "-f", str(plain)], check=True, capture_output=True, timeout=30)
    hashed = [x for x in plain.read_text().splitlines() if x.startswith("|1|")]
    assert len(hashed) == 2
    lines = [
        f"*.example.org {a}",
        f"!bad.example.org,*.example.org {b}",
        f"[10.0.0.*]:2222 {a}",
        f"10.0.0.5,hv05.example.org {b}",
        f"hv?.example.com {a}",
        "# a comment",
        f"@revoked db*.example.org {b}",
        f"@cert-authority *.example.net {a}",
        f"[*.example.org]:* {b}",
        f"  \tHV-UPPER.example.net {a}",
        *hashed,
        f"@bogus *.example.org {a}",               # invalid marker: skipped by both
        "*.example.org ssh-ed25519",                # truncated: skipped by both
        f"!*.example.org {a}",
    ]
    kh = tmp_path / "known_hosts"
    kh.write_text("".join(x + "\n" for x in lines))
    known = KnownHosts.load([str(kh)])
    names = ["a.example.org", "bad.example.org", "db1.example.org", "[10.0.0.7]:2222", "[10.0.0.7]:22",
             "10.0.0.5", "hv05.example.org", "hv5.example.com", "hv55.example.com", "[a.example.org]:2222",
             "x.example.net", "hv-upper.example.net", "hashed-one.example.org", "[hashed-two.example.org]:2222",
             "hashed-two.example.org", "nothing.invalid"]
    for name in names:
        r = subprocess.run(["ssh-keygen", "-F", name, "-f", str(kh)], capture_output=True, text=True, timeout=30)
        theirs = sorted(int(n) for n in re.findall(r"^# Host .* found: line (\d+)", r.stdout, re.M))
        ours = sorted(e.lineno for e in known.entries if e.matches(name))
        assert ours == theirs, name


def test_bad_lines_cost_only_themselves(tmp_path, keys):
    a = keys["a"]
    kh = tmp_path / "kh"
    kh.write_text("\n".join([
        "@revoked @revoked h ssh-ed25519 AAAA",                     # two markers
        "h1 ssh-ed25519 !!notbase64!!",
        f"h2 ssh-rsa {a.split()[1]}",                              # blob of another type than stated
        f"|1|bad|salt {a}",                                         # bad hash
        f"|1|{'A' * 22}==|x {a}",                                   # salt of the wrong length
        "h3 1024 35 1234567",                                       # legacy RSA1
        f"*.example.org {a}", ""]))
    known = KnownHosts.load([str(kh), str(tmp_path / "absent")])
    assert [e.lineno for e in known.entries] == [7]
    assert check_host_key(known, blob_of(a), "hv.example.org").status == "ok"


def test_verdicts(tmp_path, keys):
    a, b, ec = (blob_of(keys[k]) for k in ("a", "b", "ec"))
    lines = [f"*.example.org {keys['a']}", f"hv09.example.org {keys['b']}", f"@revoked old*.example.org {keys['ec']}",
             f"10.1.1.5 {keys['b']}", f"[hv03.example.org]:2222 {keys['ec']}"]
    (tmp_path / "kh").write_text("".join(x + "\n" for x in lines))
    known = KnownHosts.load([str(tmp_path / "kh")])
    assert check_host_key(known, a, "hv01.example.org").status == "ok"
    # two lines for hv09 (the wildcard and its own): either key is that host's, a third is CHANGED
    assert check_host_key(known, a, "hv09.example.org").status == "ok"
    assert check_host_key(known, b, "hv09.example.org").status == "ok"
    v = check_host_key(known, ec, "hv02.example.org")
    assert v.status == "revoked"                      # revoked for old*, refused for every host
    v = check_host_key(known, b, "hv02.example.org")
    assert v.status == "changed" and [e.lineno for e in v.lines] == [1]
    assert check_host_key(known, a, "hv01.example.com").status == "new"
    # off port 22: [host]:port first; no line of its own → the port-less name, only if it holds the key
    assert check_host_key(known, a, "[hv01.example.org]:2222", "hv01.example.org").status == "ok"
    assert check_host_key(known, b, "[hv01.example.org]:2222", "hv01.example.org").status == "new"
    assert check_host_key(known, a, "[hv03.example.org]:2222", "hv03.example.org").status == "changed"
    # CheckHostIP: the address's lines all hold another key → refused; no line → the name decides
    assert check_host_key(known, a, "hv01.example.org", ip_name="10.1.1.5").status == "ip-changed"
    assert check_host_key(known, b, "hv01.example.org", ip_name="10.1.1.5").status == "changed"
    assert check_host_key(known, a, "hv01.example.org", ip_name="10.1.1.6").status == "ok"
    assert check_host_key(known, a, "hv01.example.com", ip_name="10.1.1.6").status == "new"
    # an address line never makes an unknown name known (OpenSSH: HOST_NEW stays new)
    assert check_host_key(known, b, "hv01.example.com", ip_name="10.1.1.5").status == "new"


def test_resolve_names_and_check_host_ip(tmp_path):
    cfg = tmp_path / "cfg"
    cfg.write_text("Host alias\n  HostName 10.0.0.9\n  HostKeyAlias hv09.example.org\n  Port 2222\n"
                   "Host ipcheck\n  HostName hv10.example.org\n  CheckHostIP yes\n")
    c = Connector(SSHOptions(ssh_config=str(cfg), known_hosts=[str(tmp_path / "kh")]))
    t = c.resolve("alias")
    assert (t.key_name, t.fallback_name, t.check_host_ip) == ("hv09.example.org", None, False)
    t = c.resolve("plain.example.org", 2222)
    assert (t.key_name, t.fallback_name) == ("[plain.example.org]:2222", "plain.example.org")
    t = c.resolve("ipcheck")
    assert (t.key_name, t.fallback_name, t.check_host_ip) == ("hv10.example.org", None, True)
    assert _ip_name("192.0.2.10", t) == "192.0.2.10"
    assert _ip_name("192.0.2.10", Target("h", 2222, "u", [], None, "[h]:2222", [])) == "[192.0.2.10]:2222"
    assert _ip_name("127.0.6.11", t) is None                      # loopback: OpenSSH does not check
    assert _ip_name("192.0.2.10", Target("192.0.2.10", 22, "u", [], None, "192.0.2.10", [])) is None
    assert _ip_name("192.0.2.10", Target("h", 22, "u", [], "jump", "h", [])) is None


# --- the real OpenSSH client against the lab's sshd ----------------------------------------------------

def real_ssh(lab, kh: Path, *extra: str) -> str:
    r = subprocess.run(["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                        "-o", f"UserKnownHostsFile={kh}", "-o", "GlobalKnownHostsFile=/dev/null",
                        "-o", "ConnectTimeout=5", "-o", "IdentitiesOnly=yes", "-i", str(lab.client_key),
                        "-p", str(PORT), *extra, f"root@{ADDR['inst']}", "true"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode == 0:
        return "ok"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in r.stderr:
        return "changed"
    if "revoked" in r.stderr:
        return "revoked"
    if "host key is known" in r.stderr:
        return "new"
    raise AssertionError(r.stderr)


def test_verdicts_equal_the_real_ssh_client(lab, tmp_path, keys):
    mine = " ".join((lab.servers["inst"].dir / "host_key.pub").read_text().split()[:2])
    other, ec = keys["b"], keys["ec"]
    ip, hp = ADDR["inst"], f"[{ADDR['inst']}]:{PORT}"
    hashed_src = tmp_path / "hashed"
    hashed_src.write_text(f"{hp} {mine}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(hashed_src)], check=True, capture_output=True, timeout=30)
    hashed = hashed_src.read_text().strip()
    table = {
        "exact": [f"{hp} {mine}"],
        "wildcard": [f"[127.0.6.*]:* {mine}"],
        "wildcard-q": [f"[127.0.6.1?]:{PORT} {mine}"],
        "list": [f"hv01,[127.0.6.99]:{PORT},{hp} {mine}"],
        "negated": [f"![{ip}]:{PORT},[127.0.6.*]:{PORT} {mine}"],
        "negated-other-form": [f"!{ip},[127.0.6.*]:{PORT} {mine}"],   # "127.0.6.11" is not the lookup name
        "no-port-fallback": [f"{ip} {mine}"],
        "no-port-fallback-other": [f"{ip} {other}"],
        "port-line-wins": [f"{hp} {other}", f"{ip} {mine}"],
        "wildcard-changed": [f"[127.0.6.*]:* {other}"],
        "other-type-only": [f"{hp} {ec}"],
        "other-type-and-mine": [f"{hp} {ec}", f"[127.0.6.*]:{PORT} {mine}"],
        "two-lines-same-type": [f"[127.0.6.*]:{PORT} {other}", f"{hp} {mine}"],
        "hashed": [hashed],
        "upper-case": [f"[127.0.6.*]:{PORT} {mine}".upper().replace("SSH-ED25519", "ssh-ed25519")
                       .replace(mine.split()[1].upper(), mine.split()[1])],
        "revoked-here": [f"{hp} {mine}", f"@revoked [127.0.6.1?]:* {mine}"],
        "unknown": [f"10.9.9.9 {mine}"],
    }
    for case, lines in table.items():
        kh = tmp_path / f"kh-{case}"
        kh.write_text("".join(x + "\n" for x in lines))
        known = KnownHosts.load([str(kh)])
        ours = check_host_key(known, blob_of(mine), hp, ip).status
        assert ours == real_ssh(lab, kh), case
    # HostKeyAlias: the alias is looked up as it is, never with the port
    for case, lines in {"alias-wild": [f"*.lab.example {mine}"], "alias-neg": [f"!hv01.lab.example,*.lab.example {mine}"],
                        "alias-changed": [f"*.lab.example {other}"]}.items():
        kh = tmp_path / f"kh-{case}"
        kh.write_text("".join(x + "\n" for x in lines))
        ours = check_host_key(KnownHosts.load([str(kh)]), blob_of(mine), "hv01.lab.example").status
        assert ours == real_ssh(lab, kh, "-o", "HostKeyAlias=hv01.lab.example"), case
    # deliberately stricter than OpenSSH: a revoked key is refused for every host, whatever the pattern
    kh = tmp_path / "kh-revoked-elsewhere"
    kh.write_text(f"{hp} {mine}\n@revoked 10.9.9.9 {mine}\n")
    assert real_ssh(lab, kh) == "ok"
    assert check_host_key(KnownHosts.load([str(kh)]), blob_of(mine), hp, ip).status == "revoked"


# --- vmaudit collect ------------------------------------------------------------------------------------

def collect(lab, tmp_path: Path, tag: str, known: str, *args: str, ssh_config: str = "") -> dict:
    kh = tmp_path / f"kh-{tag}"
    kh.write_text(known)
    cfg = tmp_path / f"cfg-{tag}"
    cfg.write_text(ssh_config)
    inv = tmp_path / f"inv-{tag}.ini"
    inv.write_text(f"[all:vars]\nansible_port={PORT}\nansible_user=root\n"
                   f"vmaudit_connect=test://{FLEET}/hv-d.xml\nvmaudit_root={FLEET}/roots/hv-d\n"
                   f"[x]\nhv-a ansible_host={ADDR['inst']}\nhv-b ansible_host={ADDR['agentless']}\n"
                   f"hv-alias ansible_host=hv-alias\n")
    out = tmp_path / f"o-{tag}"
    r = subprocess.run([VMAUDIT, "collect", "-i", str(inv), "--output", str(out), "--identity", str(lab.client_key),
                        "--no-agent", "--known-hosts", str(kh), "--ssh-config", str(cfg), "--connect-timeout", "3",
                        "--command-timeout", "60", "--no-progress", *args],
                       capture_output=True, text=True, timeout=180)
    report = json.loads((out / "fleet.json").read_text())
    hosts = {h["name"]: h for h in report["hosts"]}
    hosts["_stderr"] = r.stderr
    hosts["_known"] = kh.read_text()
    return hosts


def test_collect_through_wildcard_negated_and_changed_wildcard_lines(lab, tmp_path, keys):
    inst = " ".join((lab.servers["inst"].dir / "host_key.pub").read_text().split()[:2])
    agentless = " ".join((lab.servers["agentless"].dir / "host_key.pub").read_text().split()[:2])
    alias_cfg = f"Host hv-alias\n  HostName {ADDR['inst']}\n  HostKeyAlias hv01.lab.example\n"

    # a fleet-wide file as configuration management writes it: one wildcard line per key
    h = collect(lab, tmp_path, "wild", f"[127.0.6.*]:{PORT} {inst}\n[127.0.6.1?]:* {agentless}\n"
                                       f"*.lab.example {inst}\n", ssh_config=alias_cfg)
    for name in ("hv-a", "hv-b", "hv-alias"):
        assert h[name]["reached"] is True, (name, h[name]["reason"], h["_stderr"])

    # negated: the line does not apply to hv-b (hv-a still matches it); hv-b is unknown, refused
    h = collect(lab, tmp_path, "neg", f"![{ADDR['agentless']}]:{PORT},[127.0.6.*]:{PORT} {inst}\n"
                                      f"![{ADDR['agentless']}]:*,[127.0.6.*]:* {agentless}\n"
                                      f"!hv01.lab.example,*.lab.example {inst}\n", ssh_config=alias_cfg)
    assert h["hv-a"]["reached"] is True, (h["hv-a"]["reason"], h["_stderr"])
    assert (h["hv-b"]["reached"], h["hv-b"]["stage"]) == (False, "host-key")
    assert f"host key of [{ADDR['agentless']}]:{PORT} is not in known_hosts" in h["hv-b"]["reason"]
    assert "host key of hv01.lab.example is not in known_hosts" in h["hv-alias"]["reason"]

    # a wildcard line holding another key: CHANGED, even with --accept-new-host-keys, and nothing recorded
    text = f"[127.0.6.*]:* {keys['b']}\n"
    h = collect(lab, tmp_path, "changed", text, "--accept-new-host-keys", "--limit", "hv-a")
    assert (h["hv-a"]["reached"], h["hv-a"]["stage"]) == (False, "host-key")
    assert f"host key CHANGED for [{ADDR['inst']}]:{PORT}" in h["hv-a"]["reason"]
    assert "([127.0.6.*]:*)" in h["hv-a"]["reason"] and ":1 " in h["hv-a"]["reason"]
    assert h["_known"] == text

    # the port-less line of the host is OpenSSH's fallback off port 22
    h = collect(lab, tmp_path, "noport", f"{ADDR['inst']} {inst}\n", "--limit", "hv-a")
    assert h["hv-a"]["reached"] is True, (h["hv-a"]["reason"], h["_stderr"])
