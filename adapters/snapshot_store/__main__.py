"""Write docs/snapshot-tables.md from the table declarations: `python -m adapters.snapshot_store --markdown`."""

import sys

from adapters.snapshot_store.tables import markdown

if sys.argv[1:] != ["--markdown"]:
    sys.exit("usage: python -m adapters.snapshot_store --markdown > docs/snapshot-tables.md")
sys.stdout.write(markdown())
