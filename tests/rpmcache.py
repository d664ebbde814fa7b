"""Real RHEL/Fedora package state for fixture roots, made at test time by the real tools (scripts/install-
deps.sh --test): `rpmbuild` makes tiny empty rpms, `rpm --root --justdb` installs them into the root's
/var/lib/rpm/rpmdb.sqlite, `createrepo_c` writes a repository's repodata (repomd.xml, primary, ...) and
`modifyrepo_c` adds its updateinfo.xml, written as Red Hat's errata feed writes it; the repodata is placed as
dnf keeps it, /var/cache/dnf/<repoid>-<hash>/repodata/ (dnf5: /var/cache/libdnf5/...).

Generated rather than committed: an rpm database is a binary that cannot be reviewed in a diff, and here
every package and advisory a test relies on is written out in the test itself."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

TOOLS = ("rpm", "rpmbuild", "createrepo_c", "modifyrepo_c")
_BUILT: dict[str, Path] = {}
_WORK = Path(tempfile.mkdtemp(prefix="vmaudit-i11-rpms-"))
atexit.register(shutil.rmtree, _WORK, True)


def have_tools() -> bool:
    return all(shutil.which(t) for t in TOOLS)


@dataclass(frozen=True)
class Pkg:
    name: str
    version: str
    release: str
    epoch: int = 0
    arch: str = "x86_64"

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}.rpm"


@dataclass
class Advisory:
    id: str
    packages: list[Pkg]
    type: str = "security"
    severity: str = "Important"


@dataclass
class Repo:
    id: str
    packages: list[Pkg]
    advisories: list[Advisory] = field(default_factory=list)
    compress: str = "gz"  # of updateinfo.xml, as modifyrepo_c writes it: gz, xz, bz2, zstd


def _run(args: list[str]) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")


def build(pkg: Pkg) -> Path:
    """A tiny rpm of that NEVRA (no files), built once per test session."""
    if pkg.filename in _BUILT:
        return _BUILT[pkg.filename]
    spec = _WORK / f"{pkg.filename}.spec"
    spec.write_text(f"Name: {pkg.name}\n" + (f"Epoch: {pkg.epoch}\n" if pkg.epoch else "")
                    + f"Version: {pkg.version}\nRelease: {pkg.release}\nSummary: vmaudit fixture\n"
                    "License: MIT\n%description\nvmaudit fixture\n%files\n")
    _run(["rpmbuild", "-bb", "--quiet", "--target", pkg.arch, "--define", f"_topdir {_WORK}/top",
          "--define", f"_rpmdir {_WORK}/rpms", "--define", "_build_id_links none", str(spec)])
    _BUILT[pkg.filename] = _WORK / "rpms" / pkg.arch / pkg.filename
    return _BUILT[pkg.filename]


def install(root: Path, packages: list[Pkg]) -> None:
    """Record the packages in the root's rpm database (/var/lib/rpm/rpmdb.sqlite), as installed."""
    db = root / "var/lib/rpm"
    db.mkdir(parents=True, exist_ok=True)
    placeholder = db / "rpmdb.sqlite"
    if placeholder.exists() and placeholder.stat().st_size == 0:
        placeholder.unlink()  # the fixture host's empty stand-in
    _run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-i", "--justdb", "--nodeps", "--noscripts",
          "--nosignature", "--ignorearch", *map(str, (build(p) for p in packages))])


def updateinfo(advisories: list[Advisory], repo_id: str) -> str:
    """updateinfo.xml in the format of Red Hat's errata (RHSA) feed."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<updates>"]
    for adv in advisories:
        out += [f'  <update from="secalert@redhat.com" status="final" type={quoteattr(adv.type)} version="2">',
                f"    <id>{adv.id}</id>", f"    <title>{adv.severity}: fixture update</title>",
                '    <issued date="2026-11-20 00:00:00"/>', '    <updated date="2026-11-20 00:00:00"/>',
                "    <rights>Copyright 2026 Red Hat Inc</rights>", "    <release>Red Hat Enterprise Linux</release>",
                f"    <severity>{adv.severity}</severity>", "    <summary>fixture</summary>",
                "    <description>fixture</description>", "    <references>",
                f'      <reference href="https://access.redhat.com/errata/{adv.id}" id="{adv.id}" '
                f'title="{adv.id}" type="self"/>', "    </references>", "    <pkglist>",
                '      <collection short="">', f"        <name>{repo_id}</name>"]
        for p in adv.packages:
            out += [f'        <package name="{p.name}" version="{p.version}" release="{p.release}" '
                    f'epoch="{p.epoch}" arch="{p.arch}" src="{p.name}-{p.version}-{p.release}.src.rpm">',
                    f"          <filename>{p.filename}</filename>", "        </package>"]
        out += ["      </collection>", "    </pkglist>", "  </update>"]
    return "\n".join(out + ["</updates>", ""])


def cache(root: Path, repo: Repo, cache_dir: str = "var/cache/dnf", mtime: float | None = None) -> Path:
    """The repository's repodata, made by createrepo_c (+ modifyrepo_c for updateinfo), placed in the
    root's dnf cache; returns the repodata directory. `mtime`: when dnf fetched it (repomd.xml's mtime)."""
    src = _WORK / f"repo-{len(os.listdir(_WORK))}"
    src.mkdir()
    for p in repo.packages:
        shutil.copy(build(p), src)
    _run(["createrepo_c", "-q", str(src)])
    if repo.advisories:
        (_WORK / "updateinfo.xml").write_text(updateinfo(repo.advisories, repo.id))
        _run(["modifyrepo_c", f"--compress-type={repo.compress}", "--mdtype=updateinfo",
              str(_WORK / "updateinfo.xml"), str(src / "repodata")])
    target = root / cache_dir / f"{repo.id}-1e3a4b7c9d2f0a11" / "repodata"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "repodata", target)
    if mtime is not None:
        os.utime(target / "repomd.xml", (mtime, mtime))
    return target


# A hardened RHEL 9 host's package state (the false-positive hosts): what is installed is what the cached
# BaseOS repository's security advisories fix, nothing is pending.
HARDENED_INSTALLED = [Pkg("openssl-libs", "3.0.7", "27.el9", epoch=1), Pkg("glibc", "2.34", "100.el9_4.2"),
                      Pkg("libvirt-daemon", "10.0.0", "6.7.el9_4"),
                      Pkg("qemu-kvm-core", "8.2.0", "11.el9_4.6", epoch=17)]
HARDENED_BASEOS = Repo("rhel-9-for-x86_64-baseos-rpms",
                       [Pkg("openssl-libs", "3.0.7", "24.el9", epoch=1), *HARDENED_INSTALLED],
                       [Advisory("RHSA-2024:2447", [HARDENED_INSTALLED[0]]),
                        Advisory("RHSA-2024:3339", [HARDENED_INSTALLED[1]]),
                        Advisory("RHSA-2024:4276", [HARDENED_INSTALLED[2], HARDENED_INSTALLED[3]])])


def hardened_rhel(root: Path, fetched_at: float) -> None:
    """Give a RHEL fixture root the hardened package state, its dnf cache fetched at `fetched_at`."""
    install(root, HARDENED_INSTALLED)
    cache(root, HARDENED_BASEOS, mtime=fetched_at)
