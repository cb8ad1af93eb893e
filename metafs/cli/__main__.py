"""``python -m metafs.cli``: what the mount daemon and the tests run."""

import sys

from .main import main

sys.exit(main())
