"""`python -m llamabatch`: the command line."""

import sys

from llamabatch.cli import main

sys.exit(main())
