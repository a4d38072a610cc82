"""`python -m actbench.report SWEEP_DIR`."""

import sys

from actbench.report import main

sys.exit(main())
