"""``python -m aetcd_breaker``."""

import sys

from .cli import main

sys.exit(main())
