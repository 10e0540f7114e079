"""labkit._stacks: reports name the user's frames only, wherever labkit itself is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import labkit

SCRIPT = textwrap.dedent(
    """
    import labkit

    tracker = labkit.ResourceTracker()


    class Connection:
        pass


    class Pool:
        @tracker.acquires
        async def acquire(self):
            return Connection()


    held = []


    async def main():
        held.append(await Pool().acquire())


    labkit.run(main())
    print(labkit.__file__)
    try:
        tracker.assert_all_released()
    except AssertionError as leak:
        print(leak)
    """
)


def test_frames_of_an_installed_labkit_are_machinery(tmp_path: Path) -> None:
    # A regular (not editable) install puts labkit under site-packages; its own frames, such as
    # the decorator's wrapper in tracker.py, must still be left out of the acquisition stack.
    site = tmp_path / "venv" / "lib" / "site-packages"
    shutil.copytree(
        Path(labkit.__file__).parent, site / "labkit", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "leak.py").write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "leak.py"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    installed, report = done.stdout.split("\n", 1)
    assert installed.startswith(str(site)), f"labkit was imported from {installed}, not the copy"
    assert "leak.py:21 in main" in report, report
    assert "tracker.py" not in report, report
