"""``python -m aitoolbox.compare``."""

import sys

from aitoolbox.experiment.compare import main

sys.exit(main())
