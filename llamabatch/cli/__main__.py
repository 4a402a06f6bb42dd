"""`python -m llamabatch.cli`: the command line."""

import sys

from llamabatch.cli.commands import main

sys.exit(main())
