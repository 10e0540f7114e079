"""Deprecated alias of :mod:`labkit.course.notebook`, kept so that older notebooks still run.

Example::

    from labkit.course import check, check_test, setup   # instead of labkit.jupyter
"""

import warnings

from labkit.course.notebook import *  # noqa: F403
from labkit.course.notebook import __all__ as __all__

warnings.warn(
    "labkit.jupyter moved to labkit.course.notebook (or import from labkit.course); "
    "the old name will be removed in labkit 0.3",
    DeprecationWarning,
    stacklevel=2,
)
