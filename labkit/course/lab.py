"""The `labkit lab` command: JupyterLab on the lessons, on 127.0.0.1, with the kit's settings.

It checks what usually goes wrong first (a busy port, a missing kernel, no lessons) and says how
to fix it, then prints the URL with its token and becomes JupyterLab (on POSIX the process is
replaced, so stopping it stops JupyterLab and its kernels), opening on the lesson index. The
kit's settings (``jupyter/settings``) and style (``jupyter/config/custom/custom.css``) apply,
and lessons open unmodified (:mod:`labkit.course.contents`); the learner's own Jupyter
configuration, settings and workspaces are still read.

Example::

    $ labkit lab --port 8888
    JupyterLab: http://127.0.0.1:8888/lab/tree/README.md?token=...
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LabError", "LabPlan", "configure", "environment", "plan", "run"]

_REPO = Path(__file__).resolve().parents[2]
_INDEX = "README.md"
_CONFIG = _REPO / "jupyter" / "config"


class LabError(RuntimeError):
    """JupyterLab cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class LabPlan:
    """Everything needed to start JupyterLab: the command line and the URL to print."""

    argv: list[str]
    url: str
    root: Path


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the `lab` subcommand's options."""
    parser.add_argument("--port", type=int, default=8888, help="port on 127.0.0.1 (default 8888)")
    parser.add_argument(
        "--root",
        type=Path,
        default=_REPO / "notebooks",
        help="folder of notebooks to serve (default: the kit's notebooks/)",
    )
    parser.add_argument("--token", default=None, help="access token (default: a fresh random one)")
    parser.add_argument(
        "--no-browser", action="store_true", help="do not try to open a web browser"
    )


def _check_port(port: int) -> None:
    if not 0 < port < 65536:
        raise LabError(f"port {port} is not a TCP port: choose one from 1 to 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise LabError(
                f"port {port} on 127.0.0.1 is already in use (another JupyterLab?): stop it, "
                f"or pick another: `make lab LAB_PORT={port + 1}` / `labkit lab --port {port + 1}`"
            ) from None


def _check_kernel() -> None:
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError:
        raise LabError(
            "JupyterLab is not installed in this environment: run `make lab` from the kit's root "
            "(it builds .venv with everything), or `pip install -r requirements.lock`"
        ) from None
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        raise LabError(
            "no 'python3' Jupyter kernel in this environment: `pip install ipykernel` "
            "(part of requirements.lock), then run `make lab` again"
        ) from None


def plan(port: int, root: Path, token: str | None = None, open_browser: bool = True) -> LabPlan:
    """Check the set-up and return the JupyterLab command line, or raise LabError."""
    root = root.resolve()
    if not root.is_dir():
        raise LabError(f"{root} is not a folder of notebooks: pass --root with the lessons' folder")
    _check_port(port)
    _check_kernel()
    token = token or secrets.token_hex(24)
    index = _INDEX if (root / _INDEX).exists() else ""
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
        f"--LabApp.app_settings_dir={_REPO / 'jupyter' / 'settings'}",
        "--LabApp.custom_css=True",
        # Lessons open unmodified and save as built (labkit/course/contents.py).
        "--ServerApp.contents_manager_class=labkit.course.contents.LessonContentsManager",
        f"--LabApp.default_url=/lab/tree/{index}",
        f"--ServerApp.open_browser={open_browser}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--ServerApp.allow_root=True")
    url = f"http://127.0.0.1:{port}/lab/tree/{index}?token={token}"
    return LabPlan(argv=argv, url=url, root=root)


def environment() -> dict[str, str]:
    """The environment JupyterLab runs in: the kit's config folder first, the learner's kept.

    JupyterLab reads custom CSS only from the first Jupyter config folder, so that folder is
    the kit's (``jupyter/config``); the learner's own folder stays on the config path, and
    their settings and workspaces stay where they always are.

    Example::

        env = environment()   # env["JUPYTER_CONFIG_DIR"] ends in jupyter/config
    """
    from jupyter_core.paths import jupyter_config_dir

    os.environ["JUPYTER_PLATFORM_DIRS"] = "1"  # before asking where the learner's config is
    env = dict(os.environ)
    own = jupyter_config_dir()
    if os.path.abspath(own) != str(_CONFIG):
        rest = [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p]
        env["JUPYTER_CONFIG_PATH"] = os.pathsep.join([own, *rest])
        env.setdefault("JUPYTERLAB_SETTINGS_DIR", os.path.join(own, "lab", "user-settings"))
        env.setdefault("JUPYTERLAB_WORKSPACES_DIR", os.path.join(own, "lab", "workspaces"))
    env["JUPYTER_CONFIG_DIR"] = str(_CONFIG)
    return env


def run(args: argparse.Namespace) -> int:
    """Start JupyterLab in the foreground; returns its exit code (on POSIX it never returns)."""
    try:
        lab = plan(args.port, args.root, args.token, open_browser=not args.no_browser)
    except LabError as exc:
        print(f"labkit lab: {exc}", file=sys.stderr)
        return 2
    print(f"JupyterLab on {lab.root}\n  open: {lab.url}\n  stop: Ctrl+C", flush=True)
    env = environment()
    if os.name == "posix":
        # Become JupyterLab: a signal that stops `labkit lab` (Ctrl+C, a terminate from a test
        # or a process manager) then reaches the server, which shuts its kernels down, instead
        # of leaving it running without a parent.
        sys.stderr.flush()
        os.execve(lab.argv[0], lab.argv, env)
    return subprocess.call(lab.argv, env=env)
