"""The launcher: as root, make closed folders reachable for a sandbox's user, then start bwrap.

bubblewrap runs as the sandbox's own unprivileged user, so it cannot bind a folder that user
cannot reach, such as a Python installed under ``/root``. Run by path as root (``python -I -S
launcher.py``: standard library only), this creates a private mount namespace, mounts a tmpfs on
the staging folder, bind-mounts each closed folder read-only under it, becomes the sandbox's user
and executes bwrap, which binds the staged copies back at their own paths inside the sandbox.
Nothing changes on the host: the mounts exist only in the launcher's namespace.

Example::

    $ python3 -I -S launcher.py STAGE UID GID ROOT... -- bwrap ARGS...
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND, _MS_REC = 1, 2, 4, 32, 4096, 16384
_MS_PRIVATE = 1 << 18


def _fail(message: str) -> None:
    sys.stderr.write(f"labkit sandbox launcher: {message}\n")
    os._exit(70)


def _mount(
    libc: ctypes.CDLL,
    source: str | None,
    target: str,
    kind: str | None,
    flags: int,
    data: str | None = None,
) -> None:
    def raw(text: str | None) -> bytes | None:
        return None if text is None else text.encode()

    if libc.mount(raw(source), raw(target), raw(kind), flags, raw(data)) != 0:
        _fail(f"mount {source} on {target}: {os.strerror(ctypes.get_errno())}")


def main(argv: list[str]) -> None:
    """Stage the roots, drop to the sandbox user and exec bwrap; never returns."""
    if "--" not in argv:
        _fail("usage: launcher.py STAGE UID GID ROOT... -- bwrap ARGS...")
    split = argv.index("--")
    stage, uid, gid, *roots = argv[:split]
    command = argv[split + 1 :]
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.unshare(_CLONE_NEWNS) != 0:
        _fail(f"unshare: {os.strerror(ctypes.get_errno())}")
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    _mount(libc, "tmpfs", stage, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=64k")
    for number, root in enumerate(roots):
        target = os.path.join(stage, str(number))
        os.mkdir(target, 0o755)
        _mount(libc, root, target, None, _MS_BIND | _MS_REC)
        _mount(libc, None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID)
    os.setgroups([])
    os.setresgid(int(gid), int(gid), int(gid))
    os.setresuid(int(uid), int(uid), int(uid))
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
