"""libfaketime for tests: a process whose clock is off by a given offset, installed without root."""

import os
import shutil
from pathlib import Path

from django.conf import settings

from embedded.servers import ServerError, _apt_download, _run_step

LIBRARY = "libfaketime.so.1"


def libfaketime() -> Path:
    """Return the path of Debian's libfaketime.so.1, fetching and unpacking the package first if needed.

    As embedded.servers installs PgBouncer: ``apt-get download libfaketime`` (no privileges) into
    ``.formation/faketime-deb``, then ``dpkg-deb -x`` into ``.formation/faketime``. Raises
    ServerError naming the step that failed (no apt-get, no network).
    """
    root = Path(settings.BASE_DIR) / ".formation"
    tree = root / "faketime"
    found = sorted(tree.rglob(LIBRARY)) if tree.exists() else []
    if found:
        return found[0]
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            raise ServerError(f"libfaketime is needed and this machine has no {tool} to fetch it: install libfaketime")
    debs = root / "faketime-deb"
    debs.mkdir(parents=True, exist_ok=True)
    partial = root / f"faketime.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    for deb in _apt_download(["libfaketime"], debs):
        _run_step(["dpkg-deb", "-x", str(deb), str(partial)], "dpkg-deb -x " + deb.name)
    shutil.rmtree(tree, ignore_errors=True)
    partial.rename(tree)
    return sorted(tree.rglob(LIBRARY))[0]


def clock_offset_env(offset: str) -> dict[str, str]:
    """Return the environment that runs a child process with its clock off by ``offset`` (e.g. "+90s")."""
    return {"LD_PRELOAD": str(libfaketime()), "FAKETIME": offset, "FAKETIME_DONT_RESET": "1"}
