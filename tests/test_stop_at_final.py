"""`stop_at_final`: a completion ends at its Final line (core/stop_at_final.py), checked on the tiny
model's tokenizer, through a real `generate`, and refused with vLLM."""

import pytest
import torch

from core.config import ConfigError, load_config
from core.rewards import ends_final_line
from core.stop_at_final import EndAtFinalLine, end_at_final_line

ENDS = [
    ("4+5=9\nFinal: 9\n", True),  # the line and its newline: nothing may follow
    ("So 1,080 in all.\nFinal: 1,080\n", True),  # commas, as the reward reads them
    ("Final: -2.5 \n\n", True),  # a decimal, spaces and blank lines after it
    ("Final: 9", False),  # the number may go on: 9 → 95
    ("Final: 9.", False),  # "9." is no number yet: 9.5, or a malformed line
    ("Final: 9 apples\n", False),  # malformed already: let it write on
    ("Final:\n", False),  # no number yet
    ("final: 9\n", False),  # case-sensitive, as the reward
]


@pytest.mark.parametrize("text, ends", ENDS)
def test_a_final_line_ends_with_its_newline(text, ends):
    assert ends_final_line(text) is ends


def test_after_a_final_line_only_the_end_of_the_message_can_follow(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = tokenizer("Final: 3\nWhat is 4+5?\n")["input_ids"]  # a Final line in the prompt does not count
    done, going = (tokenizer(text)["input_ids"] for text in ("4+5=9\nFinal: 9\n", "4+5=9\nFinal: 9"))
    width = max(len(done), len(going))
    pad = [tokenizer.pad_token_id]
    rows = torch.tensor([prompt + pad * (width - len(done)) + done, prompt + pad * (width - len(going)) + going])
    processor = EndAtFinalLine(tokenizer)
    vocab = len(tokenizer)
    processor(rows[:, : len(prompt)], torch.zeros(2, vocab))  # the first call: the prompts alone
    scores = processor(rows, torch.zeros(2, vocab))
    assert scores[0].argmax() == tokenizer.eos_token_id and torch.isinf(scores[0]).sum() == vocab - 1
    assert not torch.isinf(scores[1]).any()  # the number may go on


class Writes:
    """A logits processor that makes `generate` write these tokens first, one a step."""

    def __init__(self, ids):
        self.ids, self.step = ids, 0

    def __call__(self, input_ids, scores):
        if self.step < len(self.ids):
            scores[:, :] = float("-inf")
            scores[:, self.ids[self.step]] = 0.0
        self.step += 1
        return scores


def test_generate_ends_each_completion_at_its_final_line(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], tokenize=False, add_generation_prompt=True
    )
    enc = tokenizer([text], return_tensors="pt", add_special_tokens=False)
    ids = tokenizer("Final: 5\nSo 5.", add_special_tokens=False)["input_ids"]  # a Final line, then more

    def completion():
        out = model.generate(
            **enc,
            max_new_tokens=len(ids) + 2,
            do_sample=False,
            logits_processor=[Writes(ids)],
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        return tokenizer.decode(out[0, enc["input_ids"].shape[1] :])

    assert completion().startswith("Final: 5\nSo 5.")  # left alone, it writes on after the Final line
    end_at_final_line(model, tokenizer)
    assert completion() == "Final: 5\n" + tokenizer.eos_token  # the end of the message, right after it


@pytest.mark.parametrize("sets", [["grpo.use_vllm=true"], ["eval.backend=vllm"]])
def test_stop_at_final_is_refused_with_vllm(sets):
    with pytest.raises(ConfigError, match="stop_at_final ends completions inside transformers"):
        load_config(sets=["stop_at_final=true", *sets])
