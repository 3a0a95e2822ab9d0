"""GRPO's loss as TRL's GRPOTrainer computes it (`_compute_loss`, trl 1.16), in plain PyTorch. Training
runs TRL's; tests/test_loss.py checks this one equal to it on the same batch and its gradient equal to
TRL's, and the worked step on the Rollouts page shows its gradient (`push`). What an update does with
it: README, "What GRPO does here".

For each completion token t of sample i, with logp its log-probability under the model being trained,
old under the model that sampled it (equal on a batch's first update: ratio 1) and ref under the
reference model, A_i the sample's advantage:

    ratio   = exp(logp - old)
    term    = -min(ratio * A_i, clip(ratio, 1 - epsilon_low, 1 + epsilon_high) * A_i)   PPO's clipped objective
            + beta * ratio * (exp(ref - logp) - (ref - logp) - 1)                     the KL to the reference
    loss    = the masked terms averaged as loss_type says (the end of grpo_loss; LOSS_SPREADS in words)

The KL is weighed by the ratio (TRL's use_bias_correction_kl, on by default: its gradient is then the
reverse KL's, unbiased; still 0 while the model is the reference). cispo, sapo and vespo weigh the
policy term their own way (their lines in `terms`). The token's
log-probability is at the sampling temperature (`completion_logps`). Not covered: the TRL options in
LEFT_OUT, each at its default here (a run that sets one is told so beside its worked step).
"""

from __future__ import annotations

import math

# How each loss_type spreads a sample's advantage over its tokens on a batch's first update, in words
# (the worked step's captions; `push` gives the figures).
LOSS_SPREADS = {
    "grpo": "1 / (the sample's tokens × the step's samples): every sample weighs the same, its tokens share it",
    "sapo": "1 / (the sample's tokens × the step's samples), as grpo (its soft gate's slope is 1 at ratio 1)",
    "dapo": "1 / (completion tokens of the whole step): every token of the step weighs the same",
    "cispo": "min(1, epsilon_high) / (completion tokens of the whole step): as dapo, times its capped, constant ratio",
    "vespo": "1 / (completion tokens of the whole step), as dapo (its gamma weight is 1 at ratio 1)",
    "bnpo": "1 / (completion tokens of the step), on average: each micro-batch divides by its own tokens",
    "dr_grpo": "1 / (the step's samples × max_completion_length): a constant, so a longer sample weighs more",
    "luspo": "1 / (the step's samples): each token of every sample the same, so a longer sample weighs more",
}


# TRL options this loss leaves out, at the GRPOConfig default that leaves TRL's loss as computed here,
# and in words. vLLM's importance-sampling correction is on whenever a run samples with vLLM.
LEFT_OUT = {
    "mask_truncated_completions": (False, "truncated completions masked out of the loss"),
    "top_entropy_quantile": (1.0, "only the highest-entropy tokens trained (top_entropy_quantile)"),
    "delta": (None, "the two-sided clip's cap on the ratio (delta)"),
    "importance_sampling_level": ("token", "one importance ratio per sequence"),
    "sapo_temperature_pos": (1.0, "sapo's temperature for positive advantages"),
    "sapo_temperature_neg": (1.05, "sapo's temperature for negative advantages"),
    "vespo_k_pos": (2.0, "vespo's k for positive advantages"),
    "vespo_lambda_pos": (3.0, "vespo's lambda for positive advantages"),
    "vespo_k_neg": (3.0, "vespo's k for negative advantages"),
    "vespo_lambda_neg": (2.0, "vespo's lambda for negative advantages"),
    "use_vllm": (False, "vLLM's importance-sampling correction"),
    "off_policy_mask_threshold": (None, "the off-policy mask"),
    "entropy_coef": (0.0, "the entropy bonus"),
}


def left_out(grpo: dict) -> list[str]:
    """What of a run's TRL options (its config's `grpo:` section) this loss leaves out, in words."""
    return [words for key, (default, words) in LEFT_OUT.items() if grpo.get(key, default) != default]


def completion_logps(model, input_ids, attention_mask, completion_length: int, temperature: float = 1.0):
    """Each of the last `completion_length` tokens' log-probability under `model`, its logits divided by
    the sampling temperature as TRL does: [samples, completion_length]."""
    import torch

    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    logits = logits[:, -completion_length - 1 : -1].float() / temperature  # position t predicts token t + 1
    return torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, -completion_length:, None]).squeeze(-1)


def gamma_weights(advantages, log_ratio, mask, k_pos=2.0, lambda_pos=3.0, k_neg=3.0, lambda_neg=2.0):
    """vespo's weight of each sample, φ(w) = e^λ w^k e^(-λ w) for its sequence ratio w (1 at w = 1), a
    constant in the gradient: [samples, 1]."""
    import torch

    with torch.no_grad():
        log_w = torch.clamp((torch.clamp(log_ratio, -20.0, 20.0) * mask).sum(-1, keepdim=True), math.log(1e-8), 20.0)
        k = torch.where(advantages >= 0, k_pos, k_neg)
        lam = torch.where(advantages >= 0, lambda_pos, lambda_neg).clamp(min=1e-4)
        return torch.exp(lam + k * log_w - lam * torch.exp(log_w)).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


def terms(
    logps,
    old_logps,
    advantages,
    loss_type: str,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    mask=None,
    sapo_temperatures=(1.0, 1.05),
    vespo=(2.0, 3.0, 3.0, 2.0),
):
    """Each token's policy term (before the KL): [samples, tokens]; `advantages` is [samples, 1]."""
    import torch

    ratio = torch.exp(logps - old_logps)
    if loss_type == "cispo":  # the ratio, capped and held constant, weighs the token's log-probability
        return -torch.clamp(ratio, max=epsilon_high).detach() * advantages * logps
    if loss_type == "sapo":  # a soft gate instead of the clip: its slope is 1 at ratio 1
        temperature = torch.where(advantages > 0, *sapo_temperatures)
        return -torch.sigmoid(temperature * (ratio - 1)) * 4 / temperature * advantages
    if loss_type == "vespo":
        return -gamma_weights(advantages, logps - old_logps, mask, *vespo) * advantages * logps
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    return -torch.min(ratio * advantages, clipped * advantages)


def grpo_loss(
    logps,
    old_logps,
    ref_logps,
    advantages,
    mask,
    loss_type: str = "dapo",
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    max_completion_length: int = 256,
    step_tokens: float | None = None,
    accumulation: int = 1,
    kl_times_ratio: bool = True,
    **options,
):
    """One micro-batch's loss as TRL computes it. `logps`, `old_logps`, `ref_logps` (None without the KL)
    and `mask` are [samples, tokens], `advantages` [samples]; `step_tokens` is TRL's normalizer for dapo, cispo
    and vespo: the completion tokens of the whole optimizer step on every process, divided by the number
    of processes (one process: its step's tokens); `accumulation` the
    micro-batches in the step; `kl_times_ratio` is TRL's use_bias_correction_kl. `options`:
    sapo_temperatures, vespo (its k and lambda, TRL's order)."""
    if loss_type not in LOSS_SPREADS:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_SPREADS)}, got {loss_type!r}")
    a = advantages[:, None]
    per_token = terms(logps, old_logps, a, loss_type, epsilon_low, epsilon_high, mask, **options)
    if beta:
        delta = ref_logps - logps
        kl = delta.exp() - delta - 1
        per_token = per_token + beta * (kl * (logps - old_logps).exp() if kl_times_ratio else kl)
    masked = per_token * mask
    if loss_type in ("grpo", "sapo"):
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0) / accumulation
    if loss_type == "dr_grpo":
        return masked.sum() / (len(mask) * max_completion_length) / accumulation
    if loss_type == "luspo":
        return masked.sum(-1).mean() / accumulation
    return masked.sum() / max(step_tokens if step_tokens is not None else float(mask.sum()), 1.0)


def push(
    lengths: list[int], advantages: list[float], loss_type: str, max_completion_length: int, epsilon_high: float = 0.2
) -> list[float]:
    """The push on each token of each sample of an optimizer step on the first update of its batch of
    samples, where every ratio is 1 (token_pushes): one figure per sample, all its tokens getting the same."""
    ones = [[1.0] * n for n in lengths]
    pushes = token_pushes(ones, advantages, loss_type, max_completion_length, epsilon_high=epsilon_high)
    return [p[0] if p else 0.0 for p in pushes]


def token_pushes(
    ratios: list[list[float]],
    advantages: list[float],
    loss_type: str,
    max_completion_length: int,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
) -> list[list[float]]:
    """The push on each token of each sample of an optimizer step: minus the gradient of grpo_loss with
    respect to the token's log-probability (autograd), the step's samples as one batch, each token at
    its `ratios` (exp(logp - old); 1 on a batch's first update). A token the clip cuts gets 0. The KL
    term (beta) is left out: its push is 0 while the model is still the reference."""
    import torch

    lengths = [len(r) for r in ratios]
    width = max([*lengths, 1])
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).float()
    log_ratios = torch.zeros(len(ratios), width)
    for i, r in enumerate(ratios):
        log_ratios[i, : len(r)] = torch.log(torch.tensor(r, dtype=torch.float32))
    logps = log_ratios.clone().requires_grad_(True)  # against old log-probabilities of 0: the same ratios
    loss = grpo_loss(
        logps,
        torch.zeros_like(log_ratios),
        None,
        torch.tensor(advantages, dtype=torch.float32),
        mask,
        loss_type,
        epsilon_low=epsilon_low,
        epsilon_high=epsilon_high,
        max_completion_length=max_completion_length,
    )
    loss.backward()
    return [[-float(g) for g in logps.grad[i, :n]] for i, n in enumerate(lengths)]
