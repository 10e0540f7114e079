"""`python -m labkit`: the same as the `labkit` command."""

import sys

from labkit.course.cli import main

sys.exit(main())
