"""``python -m lorasweep.cli``."""

import sys

from . import main

sys.exit(main())
