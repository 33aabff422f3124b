"""`python -m cvfer` runs the command line."""

import sys

from cvfer.cli import main

sys.exit(main())
