"""The course: lessons built into notebooks, exercise checks, grading, and the `labkit` command.

This package is the Async Testing Lab Kit's teaching side. It depends on the testing library
(:mod:`labkit`), never the other way round, and on the tools of the ``labkit[course]`` extra
(nbformat, nbclient, IPython, ipytest, jupytext), which the library does not need.

A lesson's first code cell imports what learners call::

    import labkit
    from labkit.course import check, check_test, setup

    setup()   # %%ipytest cells run async tests, with output that stays the same run to run
"""

from labkit.course.exercise import CheckResult, Item, check, check_test
from labkit.course.notebook import setup
from labkit.course.postgres import PostgresError, PostgresServer, postgres_missing

__all__ = [
    "CheckResult",
    "Item",
    "PostgresError",
    "PostgresServer",
    "check",
    "check_test",
    "postgres_missing",
    "setup",
]
