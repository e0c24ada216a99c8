"""``python -m benchmarks`` (from the repository root): the benchmark harness, as ``bullfast bench``."""

import sys

from benchmarks.harness import main

sys.exit(main())
