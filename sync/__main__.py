"""``python -m sync`` runs the CLI, handy in a checkout without installing."""

import sys

from sync.cli import main

sys.exit(main())
