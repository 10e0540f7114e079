"""Every lesson's own solution earns full marks in the grader, and so do correct solutions
written differently; a test that tests nothing earns nothing.

One `labkit grade` run (``--jobs 2``) grades, for every lesson, the *solved notebook*: the learner
notebook with each solution cell replaced by the instructor's cell of the same id, as a learner
would type it (without the ``### BEGIN/END SOLUTION`` marker lines: a cell that still carries
them is the instructor's file, and the grader gives it nothing). Alongside: notebooks whose
solutions are correct but written another way (a TaskGroup where the reference uses gather,
``asyncio.wait_for`` where it meets 4.2's contract, other loops, other data structures), which
keeps every check's observation one that any correct implementation produces.
"""

from __future__ import annotations

import copy
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux-only")


def _role(cell: dict[str, Any]) -> str | None:
    role = cell.get("metadata", {}).get("labkit", {}).get("role")
    return role if isinstance(role, str) else None


def solved_notebook(name: str) -> dict[str, Any]:
    """The learner notebook of a lesson with the instructor's solutions typed in."""
    instructor = json.loads((ROOT / "instructor" / name).read_text())
    learner: dict[str, Any] = json.loads((ROOT / "notebooks" / name).read_text())
    solutions = {
        c["id"]: "\n".join(
            line
            for line in "".join(c["source"]).split("\n")
            if not line.strip().startswith(MARKERS)
        )
        for c in instructor["cells"]
        if _role(c) == "solution"
    }
    for cell in learner["cells"]:
        if cell["id"] in solutions:
            cell["source"] = solutions[cell["id"]]
    return learner


def _code(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


# Correct solutions written differently from the instructor's: lesson file -> cell id -> source.
DIFFERENT: dict[str, dict[str, str]] = {
    "00-getting-started.ipynb": {
        "ex1-solution": _code(
            """
            async def sleep_all(delays):
                loop = asyncio.get_running_loop()
                start = loop.time()
                async with asyncio.TaskGroup() as group:
                    for delay in delays:
                        group.create_task(asyncio.sleep(delay))
                return loop.time() - start
            """
        ),
        "ex2-solution": _code(
            """
            %%ipytest

            @pytest.mark.asyncio(loop_factories=["virtual"])
            async def test_retry(retry):
                loop = asyncio.get_running_loop()

                class Flaky:
                    def __init__(self, failures, error=ConnectionError):
                        self.failures, self.error, self.times = failures, error, []

                    async def __call__(self):
                        self.times.append(loop.time())
                        if len(self.times) <= self.failures:
                            raise self.error("flaky")
                        return 42

                ok = Flaky(1)
                began = loop.time()
                assert await retry(ok, attempts=2, delay=3) == 42
                assert [t - began for t in ok.times] == [0, 3]
                down = Flaky(10)
                with pytest.raises(ConnectionError):
                    await retry(down, attempts=4, delay=1)
                assert len(down.times) == 4
                bug = Flaky(1, KeyError)
                with pytest.raises(KeyError):
                    await retry(bug)
                assert len(bug.times) == 1
            """
        ),
    },
    "01-event-loop.ipynb": {
        "ex1-solution": _code(
            """
            %%ipytest

            @pytest.mark.asyncio(loop_factories=["virtual"])
            async def test_heartbeat(heartbeat_class):
                loop = asyncio.get_running_loop()
                times = []
                heart = heartbeat_class(lambda: times.append(loop.time()), interval=2)
                for _ in range(3):
                    heart.start()
                await asyncio.sleep(5)
                assert times == [2, 4]
                await heart.stop()
                assert set(asyncio.all_tasks()) == {asyncio.current_task()}
                await asyncio.sleep(10)
                assert times == [2, 4]
            """
        ),
        "ex2-solution": _code(
            """
            def pytest_asyncio_loop_factories(config, item):
                factories = {"virtual": labkit.new_virtual_loop}
                try:
                    from uvloop import new_event_loop as uvloop_loop
                except ImportError:
                    uvloop_loop = None
                if uvloop_loop is not None:
                    factories["uvloop"] = uvloop_loop
                factories["asyncio"] = lambda: asyncio.new_event_loop()
                return factories
            """
        ),
    },
    "02-virtual-time.ipynb": {
        "ex3-solution": _code(
            """
            async def fixed_transfer(items, *, capacity=2):
                queue = asyncio.Queue(maxsize=capacity)
                received = []
                done = object()

                async def producer():
                    for item in items:
                        await queue.put(item)
                    await queue.put(done)

                async def consumer():
                    while (item := await queue.get()) is not done:
                        received.append(item)

                await asyncio.gather(producer(), consumer())
                return received
            """
        ),
    },
    "03-deterministic-scheduling.ipynb": {
        "ex2-solution": _code(
            """
            class SafeStore(CachedStore):
                def __init__(self, db):
                    super().__init__(db)
                    self.generation = {}

                async def get(self, key):
                    if key in self.cache:
                        return self.cache[key]
                    seen = self.generation.get(key)
                    value = await self.db.read(key)
                    if self.generation.get(key) is seen:
                        self.cache[key] = value
                    return value

                async def set(self, key, value):
                    self.cache.pop(key, None)
                    await self.db.write(key, value)
                    self.generation[key] = object()
                    self.cache.pop(key, None)
            """
        ),
    },
    "04-backpressure.ipynb": {
        # asyncio.wait_for with a timeout <= 0 never runs the put, even when the queue has room
        # (Python 3.11 to 3.13), so a wait_for solution meets 4.2's contract only by putting
        # straight away when there is room.
        "ex2-solution": _code(
            """
            async def produce_or_shed(queue, items, *, wait):
                dropped = 0
                for item in items:
                    if not queue.full():
                        queue.put_nowait(item)
                        continue
                    try:
                        await asyncio.wait_for(queue.put(item), max(wait, 0))
                    except TimeoutError:
                        dropped += 1
                return dropped
            """
        ),
    },
    "05-async-iterators-and-streams.ipynb": {
        "ex2-solution": _code(
            """
            async def read_until_bye(reader):
                lines = []
                while True:
                    try:
                        line = await reader.readuntil(b"\\n")
                    except asyncio.IncompleteReadError as error:
                        raise ProtocolError("the connection closed before BYE") from error
                    text = line.decode().removesuffix("\\n")
                    if text == "BYE":
                        return lines
                    lines.append(text)
            """
        ),
    },
    "06-transports-and-protocols.ipynb": {
        "ex3-solution": _code(
            """
            class ChatMember(asyncio.Protocol):
                def __init__(self, room, name):
                    self.room = room
                    self.name = name
                    self.heartbeat = None

                def connection_made(self, transport):
                    self.transport = transport
                    self.room.members.add(self)
                    self.heartbeat = asyncio.get_running_loop().create_task(
                        self.beat(), name=f"heartbeat-{self.name}"
                    )

                async def beat(self):
                    while True:
                        await asyncio.sleep(30)
                        self.transport.write(b"PING\\n")

                def eof_received(self):
                    return None

                def connection_lost(self, exc):
                    self.heartbeat.cancel()
                    why = "left" if exc is None else f"lost: {exc.__class__.__name__}"
                    self.room.log.append(f"{self.name} {why}")
                    self.room.members.remove(self)
            """
        ),
    },
    "07-cancellation.ipynb": {
        "ex1-solution": _code(
            """
            class TightPool(Pool):
                async def acquire(self):
                    await self._slots.acquire()
                    self.in_use += 1
                    handed_out = False
                    try:
                        await asyncio.sleep(0.1)  # open the connection
                        connection = Connection()
                        await connection.query("select 1")  # health check
                        handed_out = True
                        return connection
                    finally:
                        if not handed_out:
                            self.release(None)
            """
        ),
    },
    "08-leaks-and-cleanup.ipynb": {
        "ex3-solution": _code(
            """
            async def fetch_with_retry(server):
                delays = [0.25, 0.5, 1.0]
                while True:
                    try:
                        return await server.get()
                    except ConnectionError:
                        if not delays:
                            raise
                        await asyncio.sleep(delays.pop(0))
            """
        ),
    },
    "09-performance.ipynb": {
        "ex2-solution": _code(
            """
            async def paced(items, send, *, per_second):
                if per_second <= 0:
                    raise ValueError("per_second must be positive")
                loop = asyncio.get_running_loop()
                last = None
                for item in items:
                    if last is not None:
                        wait = last + 1 / per_second - loop.time()
                        if wait > 0:
                            await asyncio.sleep(wait)
                    last = loop.time()
                    await send(item)
            """
        ),
        "ex3-solution": _code(
            """
            def compare(result, loop, baseline):
                ours = sorted(result.samples[loop])
                theirs = sorted(result.samples[baseline])
                if len(ours) < 3 or len(theirs) < 3:
                    return "too few runs"
                if ours[0] > theirs[-1]:
                    return "faster"
                if ours[-1] < theirs[0]:
                    return "slower"
                return "no clear difference"
            """
        ),
    },
    "10-suite-organization.ipynb": {
        "ex1-solution": _code(
            """
            TIERS = ("unit", "integration", "stress")


            def mark_by_folder(items):
                for item in items:
                    parts = list(item.path.parts)
                    if "tests" not in parts[:-1]:
                        continue
                    tier = parts.index("tests") + 1
                    if tier < len(parts) - 1 and parts[tier] in TIERS:
                        item.add_marker(parts[tier])
            """
        ),
    },
}

TESTS_NOTHING = _code(
    """
    %%ipytest

    @pytest.mark.asyncio(loop_factories=["virtual"])
    async def test_retry(retry):
        pass
    """
)


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Any]:
    """Grade every solved notebook, the differently written ones and a test that tests nothing."""
    work = tmp_path_factory.mktemp("lessons")
    collected = work / "collected"
    names = sorted(p.name for p in (ROOT / "instructor").glob("[0-9][0-9]-*.ipynb"))
    sources = sorted(p.stem for p in (ROOT / "lessons").glob("[0-9][0-9]-*.md"))
    assert [Path(n).stem for n in names] == sources, "every lesson is graded, none left out"
    for name in names:
        notebook = solved_notebook(name)
        (collected / "solved").mkdir(parents=True, exist_ok=True)
        (collected / "solved" / name).write_text(json.dumps(notebook))
        if name in DIFFERENT:
            different = copy.deepcopy(notebook)
            for cell in different["cells"]:
                if cell["id"] in DIFFERENT[name]:
                    cell["source"] = DIFFERENT[name][cell["id"]]
            (collected / "different").mkdir(exist_ok=True)
            (collected / "different" / name).write_text(json.dumps(different))
    nothing = solved_notebook(names[0])
    next(c for c in nothing["cells"] if c["id"] == "ex2-solution")["source"] = TESTS_NOTHING
    (collected / "nothing").mkdir()
    (collected / "nothing" / names[0]).write_text(json.dumps(nothing))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "labkit",
            "grade",
            str(collected),
            "--jobs",
            "2",
            "--instructor",
            str(ROOT / "instructor"),
            "--gradebook",
            str(work / "book.sqlite"),
            "--feedback",
            str(work / "feedback"),
        ],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with sqlite3.connect(work / "book.sqlite") as db:
        rows = db.execute(
            "SELECT l.name, s.lesson_slug, s.points, s.max_points, s.tampered, s.outcome, s.id "
            "FROM submissions s JOIN learners l ON l.id = s.learner_id"
        ).fetchall()
        results = {
            row[0]: db.execute(
                "SELECT exercise, points, max_points, status, detail FROM results "
                "WHERE submission_id = ?",
                (row[0],),
            ).fetchall()
            for row in [(r[6],) for r in rows]
        }
    return {(r[0], r[1]): (r[2], r[3], r[4], r[5], results[r[6]]) for r in rows}


def _show(graded: dict[tuple[str, str], Any], key: tuple[str, str]) -> str:
    return "\n".join(f"  {e}: {p}/{m} {s} {d}" for e, p, m, s, d in graded[key][4])


@pytest.mark.timeout(1500)
@pytest.mark.parametrize(
    "slug", sorted(p.stem for p in (ROOT / "instructor").glob("[0-9][0-9]-*.ipynb"))
)
def test_every_lessons_own_solution_earns_full_marks(
    graded: dict[tuple[str, str], Any], slug: str
) -> None:
    points, maximum, tampered, outcome, _ = graded[("solved", slug)]
    assert (points, tampered, outcome) == (maximum, 0, "completed"), _show(graded, ("solved", slug))
    assert maximum > 0


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("name", sorted(DIFFERENT))
def test_a_correct_solution_written_differently_earns_full_marks(
    graded: dict[tuple[str, str], Any], name: str
) -> None:
    key = ("different", name.removesuffix(".ipynb"))
    points, maximum, tampered, outcome, _ = graded[key]
    assert (points, tampered, outcome) == (maximum, 0, "completed"), _show(graded, key)


@pytest.mark.timeout(1500)
def test_a_test_that_tests_nothing_earns_nothing(graded: dict[tuple[str, str], Any]) -> None:
    key = ("nothing", "00-getting-started")
    by_exercise = {e: (p, m, s) for e, p, m, s, _ in graded[key][4]}
    assert by_exercise["0.2"][0] == 0
    assert by_exercise["0.2"][2] == "failed"
    assert by_exercise["0.1"][0] == by_exercise["0.1"][1]  # the rest is graded as usual
