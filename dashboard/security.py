"""The dashboard answers only to this machine: a request whose Host is not a loopback name or address
(a page elsewhere whose name was made to resolve here: DNS rebinding) gets a refusal (app.py)."""

from __future__ import annotations

import os


def allowed_host(host: str) -> bool:
    """Whether a request's Host header names this machine: a loopback name or address, or a name the
    user allowed in SIMPLE_GRPO_ALLOWED_HOSTS. An empty Host (no HTTP request: tests) is allowed."""
    name = host.strip().lower()
    name = name[1:].split("]")[0] if name.startswith("[") else name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    allowed = {h.strip().lower() for h in os.environ.get("SIMPLE_GRPO_ALLOWED_HOSTS", "").split(",") if h.strip()}
    return (
        name in ("", "localhost", "::1")
        or name in allowed
        or (name.startswith("127.") and name.replace(".", "").isdigit() and name.count(".") == 3)
    )
