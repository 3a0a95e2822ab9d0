"""simple_grpo: GRPO on GSM8K with TRL, readable top to bottom (README, "Reading the code")."""

import gc
import sys
import threading
from contextlib import contextmanager
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


@contextmanager
def collector_paused():
    """Run the block, which imports libraries for the rest of the process (TRL, and with it transformers and
    torch), with Python's cyclic garbage collector paused; if it imported any module, set everything that
    exists then aside from the collector for good (`gc.freeze`). Those imports make millions of objects
    that live as long as the process; the collector would walk them all at each of its full passes while
    they import, and once more as the process exits: about a fifth of a tiny run's CPU time
    (docs/measured.md, "The test suite"). What is set aside is never collected, cycles of it that become
    garbage later included: nearly all of it is the libraries' modules, in a command's process. (A test
    calling a command in its own process gets its objects of that moment set aside too.) For a
    command's main thread, not a dashboard's page threads: the pause holds for every thread."""
    enabled, modules = gc.isenabled(), len(sys.modules)
    try:
        gc.disable()
        yield
        if len(sys.modules) > modules:
            gc.freeze()  # before the collector is back: no pass ever walks what was set aside
    finally:
        if enabled:
            gc.enable()
