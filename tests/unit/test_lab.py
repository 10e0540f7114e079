"""`labkit lab`: the checks before JupyterLab starts, and the command line it runs."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from labkit.course import lab
from labkit.course.cli import main


def test_plan_binds_loopback_with_token_and_kit_settings(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# lessons\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    plan = lab.plan(port, tmp_path, token="t0k3n")
    assert "--ServerApp.ip=127.0.0.1" in plan.argv
    assert f"--ServerApp.port={port}" in plan.argv
    assert "--ServerApp.port_retries=0" in plan.argv
    assert "--IdentityProvider.token=t0k3n" in plan.argv
    assert any(arg.endswith("jupyter/settings") for arg in plan.argv)
    assert plan.url == f"http://127.0.0.1:{port}/lab/tree/README.md?token=t0k3n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_fresh_token_each_time(tmp_path: Path) -> None:
    port = _free_port()
    assert lab.plan(port, tmp_path).url != lab.plan(port, tmp_path).url


def test_port_in_use_names_the_fix(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(lab.LabError, match=rf"port {port} .* in use.*LAB_PORT={port + 1}"):
            lab.plan(port, tmp_path)


def test_not_a_port(tmp_path: Path) -> None:
    with pytest.raises(lab.LabError, match="not a TCP port"):
        lab.plan(70000, tmp_path)


def test_missing_root_folder(tmp_path: Path) -> None:
    with pytest.raises(lab.LabError, match="not a folder of notebooks"):
        lab.plan(_free_port(), tmp_path / "nope")


def test_missing_kernel_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_client import kernelspec

    def no_kernel(self: object, name: str) -> None:
        raise kernelspec.NoSuchKernel(name)

    monkeypatch.setattr(kernelspec.KernelSpecManager, "get_kernel_spec", no_kernel)
    with pytest.raises(lab.LabError, match="pip install ipykernel"):
        lab.plan(_free_port(), tmp_path)


def test_command_line_reports_errors_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lab", "--root", str(tmp_path / "missing"), "--no-browser"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("labkit lab: ")
    assert "\n" not in err
