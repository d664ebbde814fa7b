"""The self-contained zipapp the agentless collection copies to a host that has no vmaudit installed.

It holds vmaudit's collectors and the modules they need (pure Python; the explicit lists MODULES,
COLLECTORS and PACKAGES below), and a small `__main__` that runs `facts` only: no policy, no checks, no
report code, so it needs nothing beyond the host's own python3
(3.9 or newer) and, for libvirt facts, the libvirt binding of the host's distribution
(python3-libvirt / python3-libvirt on RHEL). Without the binding the libvirt facts are recorded as
unavailable with that reason, never guessed.

psutil (used by live collectors) is a C extension that cannot be imported from a zip. When the local
psutil is an abi3 build, its files are shipped under `_native/` with the machine and glibc they need;
the bootstrap unpacks them next to the zipapp (inside the private temporary directory the collection
created) only when the remote machine and C library match, and appends them to sys.path so a psutil
from the host's distribution still wins. Otherwise live collectors record psutil as unavailable.

Escalated (become), the zipapp runs as root in the SSH user's private directory. It unpacks (and later
removes) psutil there as that directory's owner, never as root: a run killed on timeout cannot clean up
after itself, the SSH user's `rm -rf` in the exit trap could not remove root's files, and a sudo rule
for the zipapp alone does not let that user run `sudo rm`. (Root importing files the SSH user can write
crosses no boundary: the same user wrote the zipapp that root runs.)
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import zipfile
from pathlib import Path

_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same bytes

BOOTSTRAP = r'''"""vmaudit agentless facts collector: `python3 vmaudit.pyz facts [--connect URI] [--root DIR]`."""
import json
import os
import sys

if sys.version_info < (3, 9):
    sys.stderr.write("vmaudit: the agentless collector needs Python 3.9 or newer, this is %s\n"
                     % sys.version.split()[0])
    sys.exit(96)


def _native(pyz):
    """Unpack the shipped C extensions beside the zipapp when this machine can load them."""
    import platform
    import zipfile

    with zipfile.ZipFile(pyz) as z:
        try:
            manifest = json.loads(z.read("_native/manifest.json").decode())
        except KeyError:
            return
        if platform.machine() != manifest["machine"]:
            return
        libc, version = platform.libc_ver()
        try:
            have = tuple(int(x) for x in version.split(".")[:2])
        except ValueError:
            return
        if libc != "glibc" or have < tuple(manifest["glibc"]):
            return
        dest = os.path.join(os.path.dirname(os.path.abspath(pyz)), "native")
        try:
            with _as_owner_of(os.path.dirname(dest)):
                _unpack(z, dest)
        except OSError as exc:  # e.g. a directory this user may not write: psutil is then unavailable
            sys.stderr.write("vmaudit: cannot unpack psutil beside the zipapp: %s\n" % exc)
            return
        sys.path.append(dest)  # after site-packages: the distribution's psutil wins
        return dest


class _as_owner_of(object):
    """As root (become) in another user's directory: the effective user and group of its owner for
    the block, so that what the block creates there that user alone can remove."""

    def __init__(self, path):
        self.path = path
        self.saved = None

    def __enter__(self):
        st = os.stat(self.path)
        if os.geteuid() != 0 or st.st_uid == 0:
            return self
        self.saved = (os.geteuid(), os.getegid())
        os.setegid(st.st_gid)
        try:
            os.seteuid(st.st_uid)
        except OSError:
            os.setegid(self.saved[1])
            self.saved = None
            raise
        return self

    def __exit__(self, *exc):
        if self.saved is None:
            return False
        try:
            os.seteuid(self.saved[0])
            os.setegid(self.saved[1])
        except OSError as err:  # never go on collecting as the wrong user
            sys.stderr.write("vmaudit: cannot switch back to uid %d: %s\n" % (self.saved[0], err))
            os._exit(95)
        return False


def _unpack(z, dest):
    for name in z.namelist():
        if not name.startswith("_native/lib/") or name.endswith("/"):
            continue
        rel = name[len("_native/lib/"):]
        if rel.startswith("/") or ".." in rel.split("/"):
            continue
        target = os.path.join(dest, *rel.split("/"))
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        with z.open(name) as src, open(target, "wb") as out:
            out.write(src.read())


def main():
    import argparse

    parser = argparse.ArgumentParser(prog="vmaudit.pyz")
    sub = parser.add_subparsers(dest="command")
    sub.required = True
    p = sub.add_parser("facts")
    p.add_argument("--connect", default=None)  # none: qemu:///system, or no libvirt for another --root
    p.add_argument("--root", default="/")
    p.add_argument("--output", default="-")
    p.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args()
    unpacked = _native(sys.argv[0])
    try:
        return _facts(args)
    finally:
        if unpacked:  # the collection's exit trap removes the directory too; this serves a run by hand
            import shutil

            try:
                with _as_owner_of(os.path.dirname(unpacked)):
                    shutil.rmtree(unpacked, ignore_errors=True)
            except OSError:
                pass


def _facts(args):
    from pathlib import Path

    from vmaudit.collectors import Context, collect

    root = Path(args.root)
    if not root.is_dir():
        sys.stderr.write("vmaudit: %s: --root is not a directory\n" % args.root)
        return 2
    resolved = root.resolve()
    live = resolved == Path("/")
    uri = args.connect or ("qemu:///system" if live else None)
    facts = collect(Context(root=resolved, uri=uri, live=live))
    text = json.dumps(facts, sort_keys=True)
    if args.output == "-":
        sys.stdout.write(text + "\n")
    else:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0


sys.exit(main())
'''


# What the zipapp holds, by name: the collectors (every module of vmaudit.collectors: each registers
# itself), the vmaudit modules they import, and the pure-Python third-party packages they import. Nothing
# else: no checks, commands, reports or fleet code (tests/fleet/test_zipapp_wheel.py builds it from an
# installed wheel and holds it to this list). A collector that starts importing another vmaudit module
# adds it to MODULES; one that needs a pure-Python package (say python-debian's `debian`, for apt
# version comparison) adds the package's import name to PACKAGES, and the package to pyproject.toml.
MODULES = ("vmaudit", "vmaudit.facts", "vmaudit.confparse", "vmaudit.schema", "vmaudit.errors", "vmaudit.fsutil")
COLLECTORS = "vmaudit.collectors"
PACKAGES: tuple[str, ...] = ()


def _origin(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        raise RuntimeError(f"the zipapp needs {name}, which is not installed")
    return Path(spec.origin).resolve()


def _archive_name(module: str, path: Path) -> str:
    parts = module.split(".")
    return "/".join(parts) + ("/__init__.py" if path.name == "__init__.py" else ".py")


def _package_files() -> list[tuple[str, Path]]:
    """(archive name, file) for every module of MODULES, COLLECTORS and PACKAGES, each once."""
    import pkgutil

    out: dict[str, Path] = {}
    for module in MODULES:
        path = _origin(module)
        out[_archive_name(module, path)] = path
    coll = _origin(COLLECTORS)
    out[_archive_name(COLLECTORS, coll)] = coll
    for info in pkgutil.iter_modules([str(coll.parent)]):
        name = f"{COLLECTORS}.{info.name}"
        out[_archive_name(name, coll.parent / f"{info.name}.py")] = coll.parent / f"{info.name}.py"
    for package in PACKAGES:
        pdir = _origin(package).parent
        for f in sorted(pdir.rglob("*.py")):
            if "__pycache__" not in f.parts:
                out[f"{package}/{f.relative_to(pdir).as_posix()}"] = f
    return sorted(out.items())


def _psutil_files() -> tuple[dict, list[tuple[str, Path]]] | None:
    """psutil's files when the local build is abi3 (loadable by any CPython 3 of the same platform)."""
    try:
        import psutil
    except ImportError:
        return None
    pdir = Path(psutil.__file__).resolve().parent
    sos = list(pdir.glob("*.so"))
    if not sos or not all(".abi3." in s.name for s in sos):
        return None
    libc, version = platform.libc_ver()
    if libc != "glibc":
        return None
    # psutil's manylinux wheels need glibc 2.12+; a local source build needs at most the local glibc
    need = [2, 12]
    for dist in pdir.parent.glob("psutil-*.dist-info/WHEEL"):
        tags = [line.split(":", 1)[1].strip() for line in dist.read_text().splitlines() if line.startswith("Tag:")]
        if not any("manylinux" in t for t in tags):
            need = [int(x) for x in version.split(".")[:2]]
    manifest = {"machine": platform.machine(), "glibc": need, "packages": ["psutil"]}
    files = [("_native/lib/psutil/" + f.relative_to(pdir).as_posix(), f) for f in sorted(pdir.rglob("*"))
             if f.is_file() and "__pycache__" not in f.parts]
    return manifest, files


def build_zipapp(include_native: bool = True) -> bytes:
    """The zipapp's bytes (deterministic for the same sources)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        def add(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, data)

        add("__main__.py", BOOTSTRAP.encode())
        for name, path in _package_files():
            add(name, path.read_bytes())
        native = _psutil_files() if include_native else None
        if native is not None:
            manifest, files = native
            add("_native/manifest.json", json.dumps(manifest, sort_keys=True).encode())
            for name, path in files:
                add(name, path.read_bytes())
    return buf.getvalue()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = ["build_zipapp", "digest", "BOOTSTRAP"]
