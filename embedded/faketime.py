"""libfaketime for tests and the soak: run a process as on a host whose clock is off, no root needed."""

import os
import shutil
from pathlib import Path

from embedded.servers import ServerError, _apt_download, _run_step

LIBRARY = "libfaketime.so.1"


def libfaketime(install_root: Path) -> Path:
    """Return the path of Debian's libfaketime.so.1, fetching and unpacking the package first if needed.

    As embedded.servers installs PgBouncer: ``apt-get download libfaketime`` (no privileges) into
    ``install_root/faketime-deb``, then ``dpkg-deb -x`` beside and renamed to
    ``install_root/faketime``. Raises ServerError naming the step that failed (no apt-get, no network).
    """
    tree = install_root / "faketime"
    found = sorted(tree.rglob(LIBRARY)) if tree.exists() else []
    if found:
        return found[0]
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            raise ServerError(f"libfaketime is needed and this machine has no {tool} to fetch it: install libfaketime")
    debs = install_root / "faketime-deb"
    debs.mkdir(parents=True, exist_ok=True)
    partial = install_root / f"faketime.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    for deb in _apt_download(["libfaketime"], debs):
        _run_step(["dpkg-deb", "-x", str(deb), str(partial)], "dpkg-deb -x " + deb.name)
    shutil.rmtree(tree, ignore_errors=True)
    partial.rename(tree)
    return sorted(tree.rglob(LIBRARY))[0]


def clock_offset_env(install_root: Path, offset: str) -> dict[str, str]:
    """Return the environment that runs a child with its clock off by ``offset`` (libfaketime's
    FAKETIME syntax, e.g. "+90s" or "-90s"), installing libfaketime under ``install_root`` if needed."""
    return {"LD_PRELOAD": str(libfaketime(install_root)), "FAKETIME": offset, "FAKETIME_DONT_RESET": "1"}
