"""`python -m gradient_async.cli` runs the `gradient-async` command."""

import sys

from gradient_async.cli import main

sys.exit(main())
