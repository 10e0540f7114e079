"""Timelines: a trace drawn as a table for terminals and as a picture for JupyterLab.

Both forms are deterministic: names, files and line numbers, never ids, addresses or timings,
so a notebook that shows a timeline keeps the same stored output run after run.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from labkit.trace import Step, Trace

__all__ = ["format_timeline", "plot_timeline", "timeline_png"]

_RAN = "#3b7dd8"
_FAILED = "#d8453b"
_DONE = "#4a9c5d"
_READY = "#c9d7ee"
# Sizes in points at 100 dpi: JupyterLab shows the picture pixel for pixel at 100 % zoom (and
# shrinks a wider one to fit its output area, fonts with it), so the picture stays at most
# _MAX_WIDTH inches wide and its smallest text at _SMALL points (about 12 px).
_SMALL = 9
_TEXT = 10
_MAX_WIDTH = 9.6
_STEP_WIDTH = 0.42
_LANE_HEIGHT = 1.0


def _then(step: Step) -> str:
    if step.outcome != "suspended":
        return step.outcome
    text = step.awaiting or "?"
    if step.until is not None:
        text += f" until t={step.until:g}"
    if step.where is not None:
        text += f" at {step.where}"
    return text


def format_timeline(trace: Trace, *, last: int | None = None) -> str:
    """The trace as an aligned table: step, virtual time, task, what woke it, where it stopped.

    Example::

        print(labkit.format_timeline(run.trace, last=20))
    """
    steps = trace.steps
    if not steps:
        return "(no steps: no task ran under the scheduler)"
    skipped = 0
    if last is not None and len(steps) > last:
        skipped = len(steps) - last
        steps = steps[skipped:]
    rows = [("step", "time", "task", "woken by", "also ready", "ran until")]
    for step in steps:
        others = ", ".join(step.chosen_from) or "-"
        rows.append(
            (str(step.number), f"{step.time:g}", step.task, step.woken_by, others, _then(step))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    if skipped:
        lines.append(f"... {skipped} earlier step(s) not shown")
    for row in rows:
        cells = [row[0].rjust(widths[0]), row[1].rjust(widths[1])]
        cells += [row[i].ljust(widths[i]) for i in (2, 3, 4)]
        lines.append("  ".join([*cells, row[5]]).rstrip())
    return "\n".join(lines)


def plot_timeline(
    trace: Trace,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    labels: bool | None = None,
) -> Figure:
    """Draw the trace: one lane per task, a box for each step it ran, arrows for who woke whom.

    The x axis counts scheduling steps (virtual time does not pass while a task runs, so steps
    are the honest unit); dashed lines mark where the virtual clock moved, labelled with the
    new time. A light bar shows a task that was ready but waiting for its turn; red marks the
    step that raised. ``labels`` writes what each step then waited on (default: up to 40 steps).

    Example::

        fig = labkit.plot_timeline(run.trace, title="the lost update")
        fig.savefig("timeline.png")
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    steps = trace.steps
    tasks = list(trace.tasks)
    lane = {name: len(tasks) - 1 - i for i, name in enumerate(tasks)}
    if ax is None:
        width = min(_MAX_WIDTH, 3.6 + _STEP_WIDTH * max(len(steps), 8))
        figure = Figure(figsize=(width, 1.8 + _LANE_HEIGHT * max(len(tasks), 1)), dpi=100)
        ax = figure.add_subplot()
    else:
        figure = ax.get_figure()  # type: ignore[assignment]
    if labels is None:
        labels = len(steps) <= 40
    previous_time: float | None = None
    for step in steps:
        y = lane[step.task]
        x = step.number
        if step.number - step.woken_after > 1:
            ax.barh(
                y,
                step.number - step.woken_after - 0.95,
                left=step.woken_after + 0.5,
                height=0.22,
                color=_READY,
            )
        if step.outcome.startswith("raised"):
            color = _FAILED
        elif step.outcome != "suspended":
            color = _DONE
        else:
            color = _RAN
        ax.barh(y, 0.9, left=x - 0.45, height=0.6, color=color)
        waker = step.woken_by.removeprefix("task ").removeprefix("created by ")
        if waker in lane and waker != step.task and step.woken_after > 0:
            ax.annotate(
                "",
                xy=(step.woken_after + 0.45, y),
                xytext=(step.woken_after, lane[waker]),
                arrowprops={"arrowstyle": "->", "color": "#555555", "lw": 0.8},
            )
        if labels:
            text = step.awaiting if step.outcome == "suspended" else step.outcome
            ax.text(x, y + 0.38, text or "", ha="center", va="bottom", fontsize=_SMALL, rotation=20)
        if previous_time is not None and step.time != previous_time:
            ax.axvline(x - 0.5, color="#888888", linestyle="--", linewidth=0.8)
            ax.text(
                x - 0.45,
                len(tasks) - 0.35,
                f"t={step.time:g}",
                fontsize=_SMALL,
                color="#555555",
                va="bottom",
            )
        previous_time = step.time
    ax.set_yticks(range(len(tasks)), list(reversed(tasks)), fontsize=_TEXT)
    ax.tick_params(axis="x", labelsize=_TEXT)
    ax.set_ylim(-0.6, len(tasks) - 0.1 + (0.9 if labels else 0.2))
    ax.set_xlim(0.3, max(len(steps), 1) + (1.5 if labels else 0.7))
    if 0 < len(steps) <= 30:
        ax.set_xticks(range(1, len(steps) + 1))
    ax.set_xlabel(
        f"scheduling step (virtual time starts at t={steps[0].time:g})" if steps else "step",
        fontsize=_TEXT,
    )
    ax.spines[["top", "right"]].set_visible(False)
    legend = [
        Patch(color=_RAN, label="ran one step"),
        Patch(color=_READY, label="ready, waiting its turn"),
        Patch(color=_DONE, label="finished"),
        Patch(color=_FAILED, label="raised"),
    ]
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=_SMALL)
    if title:
        ax.set_title(title, fontsize=_TEXT + 2)
    figure.tight_layout()
    return figure


def timeline_png(trace: Trace, **options: Any) -> bytes:
    """The timeline picture as PNG bytes (what JupyterLab shows for a Trace)."""
    buffer = io.BytesIO()
    plot_timeline(trace, **options).savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
