"""`python -m vessa.cli ...` (what VESSATrain and torchrun launch)."""

import sys

from vessa.cli import main

sys.exit(main())
