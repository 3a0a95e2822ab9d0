"""simple_grpo: GRPO on GSM8K with TRL, readable top to bottom (README, "Reading the code")."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the repository: configs/, runs/ and the package live here
