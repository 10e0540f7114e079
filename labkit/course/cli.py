"""The `labkit` command line: lab, build, grade, gradebook.

Each subcommand lives in the module named after its noun, which provides
``configure(parser)`` and ``run(args) -> int``; this file only wires them up.

Example::

    $ labkit build            # regenerate learner and instructor notebooks
    $ labkit grade submissions/*.ipynb --jobs 2
    $ labkit release ../workshop-kit   # learner notebooks only, for a workshop
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

__all__ = ["NEEDS", "main", "missing_tools"]

_COMMANDS = {
    "lab": ("labkit.course.lab", "start JupyterLab on the lessons"),
    "build": ("labkit.course.build", "generate learner and instructor notebooks from lessons/"),
    "grade": ("labkit.course.grading.grader", "grade learners' notebooks"),
    "gradebook": ("labkit.course.grading.gradebook", "inspect or export the gradebook"),
    "release": ("labkit.course.release", "write the learner-only tree a workshop hands out"),
}
#: What each command imports from the ``labkit[course]`` extra (the library needs none of it).
NEEDS: dict[str, tuple[str, ...]] = {
    "lab": ("jupyterlab", "ipykernel"),
    "build": ("jupytext", "nbformat", "nbclient", "ipykernel", "ipytest"),
    "grade": ("nbformat", "IPython", "ipytest", "ipykernel"),
    "gradebook": (),
    "release": (),
}


def missing_tools(command: str) -> list[str]:
    """The modules of the ``labkit[course]`` extra that ``command`` needs and cannot import.

    Example::

        missing_tools("build")   # [] in the kit's environment; ["jupytext", ...] elsewhere
    """
    return [name for name in NEEDS.get(command, ()) if importlib.util.find_spec(name) is None]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description="Async Testing Lab Kit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, summary) in _COMMANDS.items():
        command = sub.add_parser(name, help=summary, description=summary)
        command.set_defaults(_module=module_name)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            command.set_defaults(_missing=str(exc))
            continue
        module.configure(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = _parser().parse_args(argv)
    absent = missing_tools(args.command)
    if absent:
        print(
            f"labkit {args.command}: needs the course tools, which are not installed (missing: "
            f"{', '.join(absent)}); install them with: pip install 'labkit[course]'",
            file=sys.stderr,
        )
        return 2
    missing = getattr(args, "_missing", None)
    if missing:
        print(f"labkit {args.command}: not available ({missing})", file=sys.stderr)
        return 2
    module = importlib.import_module(args._module)
    try:
        code: int = module.run(args)
    except KeyboardInterrupt:
        print(f"labkit {args.command}: interrupted", file=sys.stderr)
        return 130
    return code
