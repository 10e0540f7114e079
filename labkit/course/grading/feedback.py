"""Feedback: one file per learner and lesson saying each exercise's points and how to earn the rest.

Markdown by default (readable as plain text, rendered by JupyterLab and GitHub), HTML on
request. For a test-writing exercise it lists the buggy implementations the learner's test
caught and the ones it missed; for a run that stopped early it says why; tampering is stated
plainly with what was restored.

Example::

    path = write_feedback(grade, Path("feedback"), fmt="md")
    print(path)   # feedback/alice/04-backpressure.md
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from labkit.course.grading.gradebook import Grade

__all__ = ["feedback_path", "render_html", "render_markdown", "write_feedback"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def render_markdown(grade: Grade) -> str:
    """The feedback for one graded submission, as Markdown.

    Example::

        text = render_markdown(grade)
        assert text.startswith("# ")
    """
    lines = [
        f"# {grade.lesson_slug}: feedback for {grade.learner}",
        "",
        f"**{_number(grade.points)} / {_number(grade.max_points)} points** "
        f"(graded {grade.graded_at}, submission `{Path(grade.path).name}`, "
        f"sha256 `{grade.sha256[:12]}`)",
        "",
    ]
    if grade.outcome != "completed":
        lines += [f"> **The run stopped early ({grade.outcome}):** {grade.reason}", ""]
    if grade.tampering:
        lines += [
            "> **Tampered:** the notebook changed what it must leave as it is (those cells "
            "were graded as the lesson's originals), carries instructor-only material, or "
            "reaches into the grading machinery (those exercises earn no points):",
            ">",
        ]
        lines += [f"> - {what}" for what in grade.tampering]
        lines.append("")
    lines += ["| exercise | points | status |", "| --- | ---: | --- |"]
    for e in grade.exercises:
        lines.append(
            f"| {e.exercise} | {_number(e.points)} / {_number(e.max_points)} | {e.status} |"
        )
    lines.append("")
    for e in grade.exercises:
        if e.status == "solved" and not e.missed:
            continue
        lines += [f"## Exercise {e.exercise}: {e.status}", ""]
        if e.reason:
            lines += [e.reason, ""]
        if e.caught or e.missed:
            lines.append("Your test was run against buggy implementations:")
            lines += [f"- caught: {bug}" for bug in e.caught]
            lines += [f"- **missed**: {bug}" for bug in e.missed]
            lines.append("")
        if e.failed:
            lines.append("Checks that failed:")
            for item in e.failed:
                head, _, rest = item.partition("\n")
                lines.append(f"- {head}")
                lines += [f"  {line}" for line in rest.splitlines()]
            lines.append("")
        if e.status == "not solved yet":
            lines += [
                "Replace the `raise NotImplementedError(...)` placeholder with your code.",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


def render_html(grade: Grade) -> str:
    """The same feedback as a standalone HTML page (no scripts, no external resources).

    Example::

        Path("alice.html").write_text(render_html(grade))
    """
    esc = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(grade.lesson_slug)}: {esc(grade.learner)}</title>",
        "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto}"
        "td,th{padding:.2em .8em;border-bottom:1px solid #ddd}"
        ".warn{background:#fff3cd;padding:.5em 1em}.missed{color:#a00}</style></head><body>",
        f"<h1>{esc(grade.lesson_slug)}: feedback for {esc(grade.learner)}</h1>",
        f"<p><strong>{_number(grade.points)} / {_number(grade.max_points)} points</strong> "
        f"(graded {esc(grade.graded_at)}, sha256 <code>{esc(grade.sha256[:12])}</code>)</p>",
    ]
    if grade.outcome != "completed":
        parts.append(
            f'<p class="warn"><strong>The run stopped early ({esc(grade.outcome)}):</strong> '
            f"{esc(grade.reason)}</p>"
        )
    if grade.tampering:
        items = "".join(f"<li>{esc(t)}</li>" for t in grade.tampering)
        parts.append(
            '<div class="warn"><strong>Tampered:</strong> the notebook changed what it must '
            "leave as it is (those cells were graded as the lesson's originals), carries "
            "instructor-only material, or reaches into the grading machinery (those exercises "
            f"earn no points):<ul>{items}</ul></div>"
        )
    parts.append("<table><tr><th>exercise</th><th>points</th><th>status</th></tr>")
    for e in grade.exercises:
        parts.append(
            f"<tr><td>{esc(e.exercise)}</td><td>{_number(e.points)} / {_number(e.max_points)}"
            f"</td><td>{esc(e.status)}</td></tr>"
        )
    parts.append("</table>")
    for e in grade.exercises:
        if e.status == "solved" and not e.missed:
            continue
        parts.append(f"<h2>Exercise {esc(e.exercise)}: {esc(e.status)}</h2>")
        if e.reason:
            parts.append(f"<p>{esc(e.reason)}</p>")
        if e.caught or e.missed:
            bugs = "".join(f"<li>caught: {esc(b)}</li>" for b in e.caught)
            bugs += "".join(f'<li class="missed">missed: {esc(b)}</li>' for b in e.missed)
            parts.append(f"<p>Your test was run against buggy implementations:</p><ul>{bugs}</ul>")
        if e.failed:
            fails = "".join(f"<li><pre>{esc(item)}</pre></li>" for item in e.failed)
            parts.append(f"<p>Checks that failed:</p><ul>{fails}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def feedback_path(grade: Grade, directory: Path, fmt: str = "md") -> Path:
    """Where a grade's feedback file goes: ``directory/<learner>/<lesson>.md`` (or ``.html``).

    Example::

        feedback_path(grade, Path("feedback"))   # feedback/alice/04-backpressure.md
    """
    folder = directory / (_UNSAFE.sub("_", grade.learner).strip("._") or "learner")
    return folder / f"{grade.lesson_slug}.{'html' if fmt == 'html' else 'md'}"


def write_feedback(grade: Grade, directory: Path, *, fmt: str = "md") -> Path:
    """Write one learner's feedback file under ``directory/<learner>/``; returns its path.

    Example::

        write_feedback(grade, Path("feedback"), fmt="html")
    """
    path = feedback_path(grade, directory, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_html(grade) if fmt == "html" else render_markdown(grade)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
    return path
