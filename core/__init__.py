"""simple_grpo: GRPO on GSM8K with TRL, readable top to bottom (README, "Reading the code")."""

import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the repository: configs/, runs/ and the package live here

# TRL and transformers are imported on first use, and one thread at a time: the dashboard serves each
# browser tab from a thread of its own, and two threads importing them for the first time at once can
# each be handed the other's modules half-built (Python's answer to an import cycle between threads):
# "ImportError: cannot import name 'GRPOConfig' from 'trl'". Code a dashboard page runs imports them
# `with HEAVY_IMPORTS:` (tests/test_config.py starts two such threads at once).
HEAVY_IMPORTS = threading.RLock()
