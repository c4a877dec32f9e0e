"""Makes the helpers beside the tests (``_compare``) importable under ``--import-mode=importlib``."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
