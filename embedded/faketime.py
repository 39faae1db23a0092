"""libfaketime for tests and the soak: run a process as on a host whose clock is off, no root needed."""

from pathlib import Path

from embedded.servers import ServerError, debian_package_install

LIBRARY = "libfaketime.so.1"


def libfaketime(install_root: Path) -> Path:
    """Return the path of Debian's libfaketime.so.1, fetching and unpacking the package first if needed.

    As embedded.servers installs PgBouncer (debian_package_install): ``apt-get download
    libfaketime`` (no privileges), then ``dpkg-deb -x`` beside and renamed to
    ``install_root/libfaketime``. Raises ServerError naming the step that failed (no apt-get, no network).
    """
    tree = install_root / "libfaketime"
    found = sorted(tree.rglob(LIBRARY)) if tree.exists() else []
    if not found:
        tree = debian_package_install(install_root, "libfaketime", None, missing="libfaketime is needed")
        found = sorted(tree.rglob(LIBRARY))
    if not found:
        raise ServerError(f"Debian's libfaketime package has no {LIBRARY}")
    return found[0]


def clock_offset_env(install_root: Path, offset: str) -> dict[str, str]:
    """Return the environment that runs a child with its clock off by ``offset`` (libfaketime's
    FAKETIME syntax, e.g. "+90s" or "-90s"), installing libfaketime under ``install_root`` if needed.

    libfaketime (0.9.10) moves the monotonic clock too, and a timed wait (a lock or a join with a
    timeout) computes its deadline on that clock while the kernel waits on the true one: ahead by
    90 s, a 1 s join waits 91 s (RQ's join of its command thread at a worker's stop). Its
    DONT_FAKE_MONOTONIC would keep that clock true but makes time.sleep fail (EINVAL). So the
    soak puts only the mailer, and only behind, under it.
    """
    return {"LD_PRELOAD": str(libfaketime(install_root)), "FAKETIME": offset, "FAKETIME_DONT_RESET": "1"}
