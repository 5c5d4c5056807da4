"""`python -m benchmarks.cli`: the `depthbench` command."""

import sys

from benchmarks.cli import main

sys.exit(main())
