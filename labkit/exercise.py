"""Deprecated alias of :mod:`labkit.course.exercise`, kept so that older notebooks still run.

Example::

    from labkit.course import check, check_test, setup   # instead of labkit.exercise
"""

import warnings

from labkit.course.exercise import *  # noqa: F403
from labkit.course.exercise import __all__ as __all__

warnings.warn(
    "labkit.exercise moved to labkit.course.exercise (or import from labkit.course); "
    "the old name will be removed in labkit 0.3",
    DeprecationWarning,
    stacklevel=2,
)
