"""`python -m omni_ledger` is the `omni-ledger` command."""

import sys

from omni_ledger.cli import main

sys.exit(main())
