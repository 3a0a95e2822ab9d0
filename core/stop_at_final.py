"""`stop_at_final: true`: a completion ends at its Final line, in sampling (TRL) and in eval.

Once a completion has written `Final: <number>` and a newline, the only token it may sample next is
the end of the message, so what a model would ramble on with after the answer (text that makes the
line malformed) is never written. The forced end-of-message token is trained like any other token of
the completion, so a rewarded model learns to stop there by itself.
"""

from __future__ import annotations

from core.rewards import ends_final_line

TAIL_TOKENS = 24  # the last tokens decoded at each step: a Final line with a long number fits in them


class EndAtFinalLine:
    """A logits processor for one `generate` call: after a complete Final line, every token but the
    end of the message gets probability 0. Its first call sees the prompts alone (their length is
    where the completions start)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.prompt_length = None

    def __call__(self, input_ids, scores):
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
            return scores
        start = max(self.prompt_length, input_ids.shape[1] - TAIL_TOKENS)
        tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        for row, tail in enumerate(tails):
            if ends_final_line(tail):
                scores[row, :] = float("-inf")
                scores[row, self.tokenizer.eos_token_id] = 0.0
        return scores


def end_at_final_line(model, tokenizer) -> None:
    """Make every `model.generate` (TRL's sampling and core.evaluate's) end a completion at its Final line."""
    from transformers import LogitsProcessorList

    generate = model.generate

    def generate_to_final_line(*args, logits_processor=None, **kwargs):
        processors = LogitsProcessorList([*(logits_processor or []), EndAtFinalLine(tokenizer)])  # new each call
        return generate(*args, logits_processor=processors, **kwargs)

    model.generate = generate_to_final_line
