"""Traces and timelines: who ran when, woken by what, shown as stable text and as a picture."""

from __future__ import annotations

import asyncio

import pytest

import labkit
from labkit import Trace, format_timeline, plot_timeline
from labkit.timeline import timeline_png


async def pipeline() -> None:
    """A producer and a consumer on a queue of one, with a timer in between."""
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)

    async def producer() -> None:
        for item in range(2):
            await queue.put(item)

    async def consumer() -> None:
        for _ in range(2):
            await queue.get()
            await asyncio.sleep(1.5)

    await asyncio.gather(
        asyncio.create_task(producer(), name="producer"),
        asyncio.create_task(consumer(), name="consumer"),
    )


def test_text_names_each_step_and_its_cause() -> None:
    trace = labkit.record(pipeline).trace
    lines = format_timeline(trace).splitlines()
    assert lines[0].split() == [
        "step",
        "time",
        "task",
        "woken",
        "by",
        "also",
        "ready",
        "ran",
        "until",
    ]
    rows = [line.split(None, 3) for line in lines[1:]]
    assert [row[2] for row in rows] == list(trace.schedule)
    text = str(trace)
    assert "created by pipeline" in text
    assert "task consumer" in text  # the consumer's get() woke the blocked producer
    assert "timer" in text  # the consumer's sleep ended
    assert "gather" in text  # gather woke the main task
    assert "Queue.put at test_timeline.py" in text
    assert "sleep(1.5) until t=1.5 at test_timeline.py" in text
    assert "0x" not in text
    assert "Task-" not in text


def test_the_same_run_prints_the_same_text() -> None:
    first = labkit.record(pipeline).trace.text()
    second = labkit.record(pipeline).trace.text()
    assert first == second


def test_times_are_virtual_and_monotonic() -> None:
    trace = labkit.record(pipeline).trace
    times = [step.time for step in trace]
    assert times == sorted(times)
    assert times[-1] == 3.0
    consumer_steps = [s for s in trace if s.task == "consumer" and s.woken_by == "timer"]
    assert [s.time for s in consumer_steps] == [1.5, 3.0]


def test_last_keeps_the_tail() -> None:
    trace = labkit.record(pipeline).trace
    text = trace.text(last=2)
    lines = text.splitlines()
    assert lines[0] == f"... {len(trace) - 2} earlier step(s) not shown"
    assert len(lines) == 4


def test_an_empty_trace_says_so() -> None:
    assert "no task ran" in format_timeline(Trace())


def test_unnamed_tasks_are_named_after_their_coroutines() -> None:
    async def worker() -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(asyncio.create_task(worker()), asyncio.create_task(worker()))

    trace = labkit.record(main).trace
    assert trace.tasks == ("main", "worker", "worker#2")


def test_a_failing_step_is_marked() -> None:
    async def main() -> None:
        await asyncio.sleep(1)
        raise ValueError("boom")

    run = labkit.record(main)
    assert isinstance(run.error, ValueError)
    assert run.trace.steps[-1].outcome == "raised ValueError"
    assert run.trace.text().splitlines()[-1].endswith("raised ValueError")


def test_plot_draws_one_lane_per_task() -> None:
    import matplotlib.pyplot as plt

    trace = labkit.record(pipeline).trace
    figure = plot_timeline(trace, title="pipeline")
    ax = figure.axes[0]
    assert [tick.get_text() for tick in ax.get_yticklabels()] == list(reversed(trace.tasks))
    assert ax.get_title() == "pipeline"
    texts = {text.get_text() for text in ax.texts}
    assert "t=1.5" in texts  # the clock moved there
    assert "sleep(1.5)" in texts  # what the consumer then waited on
    assert plt.get_fignums() == []  # no pyplot state: nothing leaks between cells


def test_trace_shows_as_a_png_in_jupyter() -> None:
    trace = labkit.record(pipeline).trace
    png = trace._repr_png_()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert timeline_png(trace) == png


def test_plot_into_given_axes() -> None:
    from matplotlib.figure import Figure

    figure = Figure()
    ax = figure.add_subplot()
    trace = labkit.record(pipeline).trace
    assert plot_timeline(trace, ax=ax, labels=False) is figure
    assert ax.texts  # time marks remain even without step labels


def test_the_failing_schedule_of_an_exploration_renders_the_same_way() -> None:
    async def body() -> None:
        order: list[str] = []

        async def add(name: str) -> None:
            await asyncio.sleep(0)
            order.append(name)

        await asyncio.gather(add("a"), add("b"))
        assert order == ["a", "b"], order

    with pytest.raises(labkit.ExplorationFailure) as caught:
        labkit.explore(body, runs=20, strategy="random")
    trace = caught.value.run.trace
    assert trace.text() in str(caught.value)
    assert plot_timeline(trace).axes


def test_code_from_a_notebook_cell_is_shown_as_cell() -> None:
    source = "import asyncio\n\nasync def main():\n    await asyncio.sleep(1)\n"
    namespace: dict[str, object] = {}
    exec(compile(source, "/tmp/ipykernel_4242/1234567.py", "exec"), namespace)
    run = labkit.record(namespace["main"])  # type: ignore[arg-type]
    where = run.trace.steps[0].where
    assert where is not None
    assert (where.file, where.line, where.function) == ("cell", 4, "main")


def test_a_step_reads_as_a_sentence() -> None:
    trace = labkit.record(pipeline).trace
    assert str(trace.steps[0]).startswith("step 1 at t=0: pipeline waits on gather at ")
    assert str(trace.steps[-1]) == "step 7 at t=3: pipeline returned"
    assert trace.steps[2].chosen_from == ()
    assert trace.steps[1].chosen_from == ("consumer",)


@pytest.mark.parametrize("workers", [2, 30])
def test_the_picture_is_readable_at_100_percent_zoom(workers: int) -> None:
    """JupyterLab shows the PNG pixel for pixel, and shrinks one wider than its output area."""
    import struct

    async def crowd() -> None:
        async def work() -> None:
            await asyncio.sleep(0)

        await asyncio.gather(*(work() for _ in range(workers)))

    trace = labkit.record(crowd).trace
    figure = plot_timeline(trace, title="crowd")
    sizes = [text.get_fontsize() for text in figure.findobj(lambda a: hasattr(a, "get_fontsize"))]
    assert min(sizes) >= 9  # points at 100 dpi: about 12 px
    png = timeline_png(trace)
    width, _height = struct.unpack(">II", png[16:24])
    assert width <= 960, width  # fits an output area next to the file browser
