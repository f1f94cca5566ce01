"""``python -m fastopt.cli``: the same as the ``fastopt`` command."""

import sys

from fastopt.cli import main

sys.exit(main())
