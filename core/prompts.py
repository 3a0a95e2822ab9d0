"""The system prompt and how a question becomes the model's input text (its chat template)."""

from __future__ import annotations

import hashlib

SYSTEM_PROMPT = (
    "You are a helpful assistant. Solve the problem.\n"
    "Show your reasoning briefly.\n"
    "At the end, output exactly one line in this format:\n"
    "Final: <number>\n"
    "Do not write anything after the Final line."
)


def build_prompt(tokenizer, question: str) -> str:
    """The chat-templated prompt text: system message, the question as the user turn, and the
    opening of the assistant turn."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prompt_id(prompt: str) -> str:
    """A stable short id for a prompt text (the same text gives the same id in every run)."""
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:12]
