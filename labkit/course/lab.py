"""The `labkit lab` command: JupyterLab on the lessons, on 127.0.0.1, with the kit's settings.

It checks what usually goes wrong first (a busy port, a missing kernel, no lessons) and says how
to fix it, then prints the URL with its token and opens on the lesson index.

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

__all__ = ["LabError", "LabPlan", "configure", "plan", "run"]

_REPO = Path(__file__).resolve().parents[2]
_INDEX = "README.md"


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
        f"--LabApp.default_url=/lab/tree/{index}",
        f"--ServerApp.open_browser={open_browser}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--ServerApp.allow_root=True")
    url = f"http://127.0.0.1:{port}/lab/tree/{index}?token={token}"
    return LabPlan(argv=argv, url=url, root=root)


def run(args: argparse.Namespace) -> int:
    """Start JupyterLab in the foreground; returns its exit code."""
    try:
        lab = plan(args.port, args.root, args.token, open_browser=not args.no_browser)
    except LabError as exc:
        print(f"labkit lab: {exc}", file=sys.stderr)
        return 2
    print(f"JupyterLab on {lab.root}\n  open: {lab.url}\n  stop: Ctrl+C", flush=True)
    env = dict(os.environ, JUPYTER_PLATFORM_DIRS="1")
    return subprocess.call(lab.argv, env=env)
