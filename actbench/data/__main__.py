import sys

from actbench.data import main

sys.exit(main())
