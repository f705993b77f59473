"""``python -m stream_triage``."""

import sys

from stream_triage.cli import main

sys.exit(main())
