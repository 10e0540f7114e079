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


def test_labkit_lab_becomes_jupyterlab_with_the_kits_style(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On POSIX the process is replaced: stopping `labkit lab` stops JupyterLab and its kernels."""
    import os

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_CONFIG_PATH", "JUPYTERLAB_SETTINGS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("JUPYTERLAB_WORKSPACES_DIR", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    calls: list[tuple[str, list[str], dict[str, str]]] = []

    class Became(Exception):
        pass

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        calls.append((path, argv, env))
        raise Became

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(os, "name", "posix")
    with pytest.raises(Became):
        main(["lab", "--root", str(tmp_path), "--port", str(_free_port()), "--no-browser"])
    path, argv, env = calls[0]
    assert argv[0] == path
    assert "--LabApp.custom_css=True" in argv
    config = Path(env["JUPYTER_CONFIG_DIR"])
    assert config == lab._REPO / "jupyter" / "config"
    assert "word-break: normal" in (config / "custom" / "custom.css").read_text()
    own = env["JUPYTER_CONFIG_PATH"].split(os.pathsep)[0]
    assert own.startswith(str(home))  # the learner's own configuration is still read
    assert env["JUPYTERLAB_SETTINGS_DIR"] == os.path.join(own, "lab", "user-settings")
    assert env["JUPYTERLAB_WORKSPACES_DIR"] == os.path.join(own, "lab", "workspaces")
    assert "open: http://127.0.0.1:" in capsys.readouterr().out


def test_a_lesson_opens_with_the_kernels_python_and_saves_as_built(tmp_path: Path) -> None:
    """What JupyterLab sees and what lands on disk, through labkit lab's contents manager."""
    import asyncio
    import json
    import shutil

    from labkit.course.contents import PYTHON_VERSION, LessonContentsManager

    built = lab._REPO / "notebooks" / "00-getting-started.ipynb"
    shutil.copy(built, tmp_path / "lesson.ipynb")
    plain = json.loads(built.read_text())
    del plain["metadata"]["labkit"]  # not a lesson: left alone
    (tmp_path / "other.ipynb").write_text(json.dumps(plain))
    manager = LessonContentsManager(root_dir=str(tmp_path))

    async def open_and_save(name: str) -> dict[str, object]:
        model = await manager.get(name)
        info = dict(model["content"]["metadata"]["language_info"])
        model["content"]["metadata"]["language_info"]["version"] = PYTHON_VERSION  # as JupyterLab
        await manager.save({"type": "notebook", "format": "json", **model}, name)
        return info

    opened = asyncio.run(open_and_save("lesson.ipynb"))
    assert opened["version"] == PYTHON_VERSION  # what the kernel reports: nothing to change
    assert (tmp_path / "lesson.ipynb").read_bytes() == built.read_bytes()
    assert "version" not in asyncio.run(open_and_save("other.ipynb"))
    saved = json.loads((tmp_path / "other.ipynb").read_text())
    assert saved["metadata"]["language_info"]["version"] == PYTHON_VERSION
