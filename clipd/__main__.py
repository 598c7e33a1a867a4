"""``python -m clipd``: the same as the ``clipd`` command."""

import sys

from clipd.cli import main

sys.exit(main())
