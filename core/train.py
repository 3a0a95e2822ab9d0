"""`python -m core.train`: a GRPO run from the command line (the run itself is core/grpo.py's `train`).

    python -m core.train --config configs/tiny_cpu.yaml [--set train.num_train_steps=10 ...]
    python -m core.train --resume runs/<run> [--set train.num_train_steps=200]

core/lifecycle.py gives the run its folder's lock, status.json, stops and workers. A bad config or data
file prints one line and exits 2; SIGTERM stops the run (exit code 0, state `stopped`), at the next
step boundary during training, with a checkpoint to --resume from.
"""

from __future__ import annotations

import sys

from core import lifecycle
from core.grpo import train


def main(argv: list[str] | None = None) -> int:
    return lifecycle.main(train, __doc__.split("\n")[0], argv)


if __name__ == "__main__":
    sys.exit(main())
