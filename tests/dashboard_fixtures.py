"""Run directories for the dashboard tests: a synthetic learning run, a run whose model wrote
HTML, and a run that crashed."""

import json
from pathlib import Path

from core import REPO
from core.rundir import rollout_record
from tests.fake_run import write_run

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> Final: 7'


def write_status(run_dir: Path, **status) -> None:
    (run_dir / "status.json").write_text(
        json.dumps({"started_at": 1.7e9, "ended_at": 1.7e9 + 60, "global_step": 30, "max_steps": 30, **status})
    )


def write_config(run_dir: Path, **changes) -> None:
    import yaml

    from core.config import load_config

    config = load_config(REPO / "configs" / "tiny_cpu.yaml").to_dict()
    config["train"]["output_dir"] = str(run_dir)
    config.update(changes)
    (run_dir / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def make_runs(root: Path) -> dict[str, Path]:
    """Three runs under `root`: learning (finished, with evals), html (finished), crashed."""
    learning = root / "learning"
    write_run(learning, 1024, ranks=2, prompts=20, ramp=20)
    write_config(learning)
    write_status(learning, state="finished", exit_code=0, pid=1)
    (learning / "metrics.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "step": s,
                    "time": 1.7e9 + s,
                    "loss": 0.1 / s,
                    "reward": s / 40,
                    "learning_rate": 1e-4,
                    "entropy": 1.0 - s / 60,
                    "frac_reward_zero_std": 0.5,
                    "grad_norm": 1.0,
                    "step_time": 1.0,
                    "completions/mean_length": 20.0,
                    "clip_ratio/region_mean": 0.0,
                }
            )
            + "\n"
            for s in range(1, 31)
        )
    )
    (learning / "eval").mkdir()
    for phase, right in (("before", {0}), ("after", {0, 1, 2}), ("full_test", {0, 1, 2, 3})):
        (learning / "eval" / f"{phase}.jsonl").write_text(
            "".join(
                json.dumps(
                    {
                        "prompt_id": f"e{i}",
                        "question": f"What is {i} + {i}?",
                        "prompt": "P",
                        "ground_truth": str(2 * i),
                        "prediction": str(2 * i) if i in right else "0",
                        "completion": f"{phase}: Final: {2 * i if i in right else 0}",
                        "correct": i in right,
                        "lenient_correct": i in right or i == 3,
                        "completion_tokens": 12,
                    }
                )
                + "\n"
                for i in range(4)
            )
        )
    (learning / "eval" / "summary.json").write_text(
        json.dumps(
            {
                "before": {
                    "eval_accuracy": 0.25,
                    "eval_lenient_accuracy": 0.5,
                    "eval_format_rate": 1.0,
                    "eval_avg_new_tokens": 12,
                    "n": 4,
                },
                "after": {
                    "eval_accuracy": 0.75,
                    "eval_lenient_accuracy": 1.0,
                    "eval_format_rate": 1.0,
                    "eval_avg_new_tokens": 12,
                    "n": 4,
                },
            }
        )
    )

    html = root / "html"
    (html / "rollouts").mkdir(parents=True)
    record = rollout_record(
        step=1,
        prompt_id="xss",
        prompt="<b>prompt</b>",
        question="<i>What?</i>",
        completion=XSS,
        prediction="7",
        ground_truth="7",
        reward=1.0,
        correct=True,
        rank=0,
        sample=0,
        completion_tokens=30,
        time=1.7e9,
    )
    (html / "rollouts" / "rollouts.jsonl").write_text(
        "".join(json.dumps({**record, "sample": i, "reward": 1.0 - 0.9 * (i % 2)}) + "\n" for i in range(4))
    )
    write_config(html, max_new_tokens=64)
    write_status(html, state="finished", exit_code=0, pid=1, global_step=1, max_steps=1)

    crashed = root / "crashed"
    crashed.mkdir()
    write_config(crashed)
    write_status(crashed, state="running", pid=2**22 + 12345, ended_at=None)  # no such process
    (crashed / "train.log").write_text("step 1\nRuntimeError: CUDA out of memory (pretend)\n")
    return {"learning": learning, "html": html, "crashed": crashed}
