"""The tamper scan flags learner cells that reach into the machinery, and no honest solution."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.course.grading.scan import scan_cell
from labkit.course.grading.submission import load_lessons

ROOT = Path(__file__).resolve().parents[2]
LESSONS = load_lessons(ROOT / "instructor")


@pytest.mark.parametrize("number", sorted(LESSONS))
def test_no_solution_of_any_lesson_is_flagged(number: int) -> None:
    lesson = LESSONS[number]
    solutions = [c for c in lesson.cells if c.role == "solution"]
    assert solutions
    for cell in solutions:
        assert scan_cell(cell.source, cell=cell.id, protected=lesson.protected) == [], cell.id


HOSTILE = {
    "walks gc": ("import gc\nfor o in gc.get_objects():\n    pass", "imports gc"),
    "wraps json.loads": (
        "import json\n_loads = json.loads\njson.loads = lambda s, **k: _loads(s)",
        "assigns json.loads (patches a module)",
    ),
    "reads LABKIT_RESULTS": (
        "import os\nopen(os.environ['LABKIT_RESULTS'], 'a')",
        "uses os.environ",
    ),
    "rebinds exercise.all": (
        "import labkit.course.exercise as ex\nex.all = lambda items: True",
        "imports labkit.course.exercise",
    ),
    "fakes a module": (
        "import sys, types\nsys.modules['labkit.course.trial'] = types.ModuleType('x')",
        "uses sys.modules",
    ),
    "patches the outcome": (
        "from labkit.course.trial import Trial\nTrial.passed = property(lambda self: True)",
        "imports labkit.course.trial",
    ),
    "writes to a descriptor": ("import os\nos.write(5, b'forged')", "uses os.write"),
    "opens a descriptor": ("open(5, 'wb').write(b'forged')", "opens a raw file descriptor"),
    "reads frames": ("import sys\nsys._getframe(1).f_back.f_locals", "uses sys._getframe"),
    "reads a traceback": (
        "try:\n    1 / 0\nexcept Exception as e:\n    f = e.__traceback__.tb_frame",
        "uses .__traceback__",
    ),
    "compares code objects": (
        "def test_retry(retry):\n    assert retry.__code__ is not None",
        "uses .__code__",
    ),
    "hides getattr": ("x = getattr(retry, '__co' + 'de__')", "calls getattr with a computed"),
    "spells a dunder": ("name = '__globals__'", "spells '__globals__'"),
    "walks classes": ("object.__subclasses__()", "uses .__subclasses__"),
    "reads mro": ("def test_h(h):\n    assert len(h.mro()) == 2", "uses .mro"),
    "runs built code": ("exec('x = 1')", "uses exec"),
    "reads /proc": ("open('/proc/1/cmdline').read()", "names '/proc/1/cmdline'"),
    "signals the zygote": (
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
        "uses os.kill",
    ),
    "shell escape": ("!ls /", "runs a shell command"),
    "env magic": ("%env SECRET=1", "uses the %env magic"),
    "bash cell": ("%%bash\nls /", "uses the %%bash cell magic"),
    "inside an ipytest cell": ("%%ipytest\nimport inspect\ndef test_x(): pass", "imports inspect"),
    "patches the lesson": ("Heartbeat.start = lambda self: None", "changes the lesson's Heartbeat"),
    "patches a class": ("type(loop).run_until_complete = None", "patches a class at run time"),
    "uses get_ipython": ("get_ipython().user_ns.clear()", "uses get_ipython"),
    "ctypes": ("import ctypes\nctypes.string_at(0)", "imports ctypes"),
}


@pytest.mark.parametrize("route", sorted(HOSTILE))
def test_each_route_into_the_machinery_is_flagged_with_its_line(route: str) -> None:
    source, expected = HOSTILE[route]
    findings = scan_cell(source, cell="ex1-solution", protected={"Heartbeat", "retry", "asyncio"})
    assert any(expected in str(f) for f in findings), [str(f) for f in findings]
    assert all(str(f).startswith("line ") for f in findings)


def test_honest_test_code_is_left_alone() -> None:
    source = (
        "%%ipytest\n"
        "import asyncio, os\n"
        "@pytest.mark.asyncio(loop_factories=['virtual'])\n"
        "async def test_retry(retry, monkeypatch, tmp_path):\n"
        "    calls = []\n"
        "    writer = Writer()\n"
        "    writer.write(b'x')\n"
        "    monkeypatch.setattr(asyncio, 'sleep', fake_sleep)\n"
        "    value = getattr(writer, 'closed')\n"
        "    path = os.path.join(tmp_path, 'data.txt')\n"
        "    with open(path, 'w') as stream:\n"
        "        stream.write('x')\n"
        "    assert type(writer).__name__ == 'Writer'\n"
        "    %time x = 1\n"
    )
    assert scan_cell(source, protected={"retry", "asyncio"}) == []
