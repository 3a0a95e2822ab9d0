"""simple_grpo: GRPO on GSM8K with TRL, readable top to bottom (README, "Reading the code")."""

import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the repository: configs/, runs/ and the package live here

# TRL and transformers are imported on first use, and one thread at a time. The dashboard serves each
# browser tab from a thread of its own. Two threads importing them for the first time at once can each be
# handed the other's modules half-built (Python's answer to an import cycle between threads):
# "ImportError: cannot import name 'GRPOConfig' from 'trl'". So where a dashboard page reaches TRL or
# transformers (TRL's config, the form's fields, the token view's model load), it does so
# `with HEAVY_IMPORTS:`. torch alone needs no lock: it imports neither. tests/test_config.py starts two
# such threads at once.
HEAVY_IMPORTS = threading.RLock()
