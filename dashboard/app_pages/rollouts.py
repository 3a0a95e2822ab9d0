"""Rollouts: filter every sampled completion, page through them, open one, compare its group."""

import streamlit as st

from core.advantage import formula, run_settings
from core.errors import ConfigError
from core.loss import LOSS_SPREADS, left_out
from core.rundir import read_config
from core.runs import reuse
from core.tokens import around, described, fingerprint, model_choices, updates
from dashboard.caches import store_for, token_view
from dashboard.widgets import (
    ROW_CLICK,
    clicked_row,
    is_live,
    live_every,
    pick_run,
    plain,
    show_completion,
    show_tokens,
    step_window,
    token_table,
)

CATEGORY = {0.0: "0.0 · malformed", 0.1: "0.1 · wrong", 1.0: "1.0 · correct"}  # the strict gsm8k reward's alone
PAGE_SIZE = 25

st.title("Rollouts")
run = pick_run()
if run is None:
    st.stop()
store = store_for(run["name"])
params = st.query_params
trl = bool(run.get("read_only"))  # a plain TRL run: no ground truth, correctness, rank or token counts
if trl:
    st.caption(
        "A TRL run: its completions table holds no ground truth, parsed answer, correctness, rank or token "
        "count, so those columns are empty; the reward is the sum of its reward columns (the weights are not in its "
        "files), and each group below says whether its advantages are the ones TRL logged."
    )
if st.session_state.get("rollouts_of") != run["name"]:  # another run: what was open or drawn was the other's
    st.session_state["rollouts_of"] = run["name"]
    for key in ("focus", "drawn_rows"):
        st.session_state.pop(key, None)


@st.fragment(run_every=live_every(run))
def no_rollouts_yet() -> None:
    """Said until a live run's first rollouts are in; then the whole page is drawn with them."""
    if store_for(run["name"]).step_range() is not None:
        st.rerun()
    st.info("This run has no rollouts yet" + (": they show here as it samples them." if is_live(run) else "."))


steps = store.step_range()
if steps is None:
    no_rollouts_yet()
    st.stop()
lo, hi = steps
config = read_config(store.run_dir)  # the run's run.yaml ({} for a TRL run): the filter's labels, the worked step
settings = run_settings(config)
arrival = (run["name"], params.get("prompt_id"), params.get("step"), params.get("from"), params.get("to"))
if params.get("step", "").isdigit() and st.session_state.get("arrived") != arrival:
    # opened at a step (a point of a Prompts curve, a doctor's example): the table shows that step, or the
    # steps `from`-`to` a point of a long run's curve stands for
    st.session_state["arrived"] = arrival
    first, last = (params.get(k, params["step"]) for k in ("from", "to"))
    first, last = (min(max(int(v) if v.isdigit() else int(params["step"]), lo), hi) for v in (first, last))
    st.session_state["steps"], st.session_state["steps_edges"] = (first, max(first, last)), (lo, hi)

with st.container(border=True):
    c1, c2, c3, c4 = st.columns([3, 2, 1, 1])
    with c1:  # a window left at the run's edges follows the run: new steps show up as they arrive
        step_min, step_max = step_window("Steps", lo, hi, key="steps")
    rewards = [r for r in store.reward_histogram()["reward"]]
    strict = settings["weights"] in ({"gsm8k": 1.0}, {})  # {}: the default
    chosen = c2.multiselect(
        "Reward",
        rewards,
        format_func=lambda r: (
            "none (no reward function scored it)"
            if r != r
            else (CATEGORY if strict and not trl else {}).get(r, f"{r:g}")
        ),
        key="rewards",
    )
    correct = c3.selectbox(
        "Correct",
        ["any", "yes", "no"],
        key="correct",
        disabled=trl,
        help="Not recorded for a TRL run." if trl else None,
    )
    ranks = store.ranks()
    rank = c4.selectbox("Rank", ["any", *ranks], key="rank") if len(ranks) > 1 else "any"
    c5, c6, c7 = st.columns([2, 3, 1])
    prompt_id = c5.text_input("Prompt id", params.get("prompt_id", ""), key="prompt_id").strip()
    search = c6.text_input(
        "Search question and completion text", key="search", placeholder="e.g. Final: 42 (case-insensitive, literal)"
    )
    order = c7.selectbox("Order", ["newest", "oldest", "reward_high", "reward_low", "longest"], key="order")
filters = dict(
    step_min=step_min,
    step_max=step_max,
    rewards=chosen or None,
    correct={"any": None, "yes": True, "no": False}[correct],
    prompt_id=prompt_id or None,
    search=search or None,
    rank=None if rank == "any" else int(rank),
    order=order,
)
if st.session_state.get("pager", {}).get("filters") != filters:  # other filters: back to the first page
    st.session_state["pager"] = {"filters": filters, "start": "first", "key": None, "first_row": 0}


def opened() -> tuple[str, int, int] | None:
    """The rollout open below the table: the one clicked last, or the one the address names."""
    focus = st.session_state.get("focus")
    if focus is None and params.get("prompt_id") and params.get("step"):
        focus = (params["prompt_id"], int(params["step"]), int(params.get("sample", 0)))
    return focus


def turn(start: str, key, first_row: int) -> None:
    """A pager button: the page that starts there (its first row's number, for the caption)."""
    st.session_state["pager"].update(start=start, key=key, first_row=first_row)


@st.fragment(run_every=live_every(run))
def table():
    """One page of the matching rollouts. Pages are found by key (the first, the rows after or before
    the page shown, the last): the first page follows a live run, and every page is as quick as the
    first, however deep."""
    store, pager = store_for(run["name"]), st.session_state["pager"]
    page, total = store.rollouts_page(**filters, limit=PAGE_SIZE, start=pager["start"], key=pager["key"])
    if page.empty and pager["start"] != "first":  # the rows it was next to went away: start over
        pager.update(start="first", key=None, first_row=0)
        page, total = store.rollouts_page(**filters, limit=PAGE_SIZE)
    first_row = max(0, total - len(page)) if pager["start"] == "last" else min(pager["first_row"], total)
    pager["first_row"] = first_row
    first_key, last_key = (page["key"].iloc[0], page["key"].iloc[-1]) if len(page) else (None, None)
    at_start, at_end = first_row == 0, first_row + len(page) >= total
    p1, p2, p3, p4, p5 = st.columns([1, 1, 1, 1, 4])
    p1.button(
        "first",
        icon=":material/first_page:",
        disabled=at_start,
        key="page_first",
        on_click=turn,
        args=("first", None, 0),
    )
    p2.button(
        "◀ previous",
        disabled=at_start,
        key="page_before",
        on_click=turn,
        args=("before", first_key, max(0, first_row - PAGE_SIZE)),
    )
    p3.button(
        "next ▶", disabled=at_end, key="page_after", on_click=turn, args=("after", last_key, first_row + len(page))
    )
    p4.button(
        "last", icon=":material/last_page:", disabled=at_end, key="page_last", on_click=turn, args=("last", None, total)
    )
    p5.caption(
        f"{total:,} {'rollout matches' if total == 1 else 'rollouts match'} · rows {first_row + 1 if len(page) else 0:,}–{first_row + len(page):,} · "
        f"{store.skipped} lines of the run's files skipped (not a valid record)"
    )
    if store.note:  # why this run's store is read into memory, or its cache was rebuilt (core/store/cache.py)
        st.caption(store.note)
    if store.unreadable:  # a TRL run's completion files that cannot be read: which, and why, not a silent gap
        st.warning(
            f"{len(store.unreadable)} completions file{'s' if len(store.unreadable) > 1 else ''} of this TRL run "
            "cannot be read, and their rollouts are not shown (a file still being written is read once it is "
            "whole): " + "; ".join(plain(f"{name}: {why}") for name, why in sorted(store.unreadable.items())),
            icon=":material/warning:",
        )
    if store.eval_files:  # a TRL run's files of an evaluation step: the evaluation's completions, not training's
        st.caption(
            f"Not shown: {', '.join(store.eval_files)}, written at a step where TRL evaluated, which logs the "
            "evaluation's completions into that step's file in place of the training ones."
        )
    shown = page[
        [
            "step",
            "prompt_id",
            "sample",
            "rank",
            "reward",
            "prediction",
            "ground_truth",
            "completion_tokens",
            "question",
            "completion",
        ]
    ]
    rows = [(r.prompt_id, int(r.step), int(r.sample)) for r in page.itertuples()]  # the rollout of each row
    focus = opened()
    shown.insert(0, "open", ["▶" if row == focus else "" for row in rows])  # the rollout open below, marked
    if focus is not None and focus not in rows:  # a live run's new rows pushed it off this page: still said
        st.caption(f"▶ Open below: prompt {focus[0]} · step {focus[1]} · sample {focus[2]} (not on this page now)")
    version = st.session_state.get("table_version", 0)
    event = st.dataframe(
        shown,
        hide_index=True,
        on_select="rerun",
        selection_mode=ROW_CLICK,
        key=f"table_{version}",
        column_config={
            "open": st.column_config.TextColumn("", width=30),
            "completion": st.column_config.TextColumn(width="large"),
            "question": st.column_config.TextColumn(width="medium"),
        },
    )
    # A click names a position in the rows the browser showed: those drawn by the run before this one
    # (a live run's new rows, fetched just now, may have moved every row down since).
    drawn, st.session_state["drawn_rows"] = st.session_state.get("drawn_rows", []), rows
    clicked = clicked_row(event)
    if clicked is not None:
        if clicked < len(drawn):
            st.session_state["focus"] = st.session_state["just_opened"] = drawn[clicked]  # the rollout clicked
        st.session_state["table_version"] = version + 1  # a fresh table, with no selection left to act again
        st.rerun()  # the whole page: the rollout opens below at once


table()
if just_opened := st.session_state.pop("just_opened", None):  # an answer to the click where the eye is
    st.toast(
        f"Opened prompt {just_opened[0]} · step {just_opened[1]} · sample {just_opened[2]}: below the table",
        icon=":material/arrow_downward:",
    )

focus = opened()
if focus is None:
    st.caption("Select a row to read that rollout and its group.")
    st.stop()

prompt_id, step, sample = focus
rollout = store.rollout(prompt_id, step, sample)
if rollout is None:
    st.warning(f"No rollout for prompt {prompt_id} at step {step}, sample {sample}.")
    st.stop()

st.divider()
st.subheader(f"Prompt {prompt_id} · step {step} · sample {sample}")
nav = store.prompt_steps(prompt_id)
i = nav.index(step)
n1, n2, n3 = st.columns([1, 1, 4])
if n1.button("◀ previous step", disabled=i == 0):
    st.session_state["focus"] = (prompt_id, nav[i - 1], sample)
    st.rerun()
if n2.button("next step ▶", disabled=i == len(nav) - 1):
    st.session_state["focus"] = (prompt_id, nav[i + 1], sample)
    st.rerun()
n3.caption(f"This prompt was sampled at {len(nav)} step{'s' if len(nav) != 1 else ''}.")

m1, m2, m3, m4 = st.columns(4)
parts = rollout.get("rewards") or {}
breakdown = " + ".join(f"{name} {value:g}" for name, value in parts.items())
m1.metric("Reward", f"{rollout['reward']:g}", help=f"{breakdown} (before weights)" if parts else None)
m2.metric("Prediction", rollout["prediction"] or "—")
m3.metric("Ground truth", rollout["ground_truth"] or "—")
m4.metric("Completion tokens", "—" if rollout["completion_tokens"] is None else rollout["completion_tokens"])
st.caption("Question")
st.text(rollout["question"])
with st.expander("Full prompt (as the model saw it)"):
    st.code(rollout["prompt"], language=None, wrap_lines=True)
show_completion(rollout["completion"])

if not trl and st.toggle(
    "What training did to each token",
    key="token_view",
    help="Each token's log-probability under two of the run's models: by default the ones it kept nearest "
    "on either side of this sample's step",
):
    try:
        models = model_choices(store.run_dir)
    except ConfigError as e:  # a run.yaml that cannot be read: said, and the rest of the page still drawn
        st.error(plain(str(e)))
        models = {}
    choices = [c for c in models if c != "before"]
    if not models:
        pass
    elif not choices:
        st.info(
            "This run has no saved model or checkpoint yet to compare with its starting model: "
            "it saves model/ when it finishes (and checkpoint-<step>/ every train.save_steps steps)."
        )
    else:
        in_order = list(models)  # the starting model, each kept checkpoint, the saved model
        first, last = around(models, step)  # by default the kept weights on either side of this sample's step
        c1, c2 = st.columns(2)
        earlier = c1.selectbox(
            "Compare",
            in_order[:-1],
            index=in_order.index(first),
            key=f"token_before:{prompt_id}:{step}:{sample}",
            format_func=described,
        )
        further = [c for c in in_order if updates(c) > updates(earlier)]
        later = c2.selectbox(
            "with",
            further,
            index=further.index(last) if last in further else len(further) - 1,
            key=f"token_after:{prompt_id}:{step}:{sample}",  # each rollout starts at the models around its step
            format_func=described,
        )
        try:
            with st.spinner("Scoring the completion under both models…"):
                view = token_view(
                    str(store.run_dir),
                    prompt_id,
                    step,
                    sample,
                    rollout.get("attempt"),
                    rollout["completion"],
                    (earlier, later),
                    (fingerprint(models[earlier]), fingerprint(models[later])),
                    rollout,
                )
        except ConfigError as e:
            st.error(plain(str(e)))
        else:
            st.caption(
                f"Compared: **{described(earlier)}** → **{described(later)}**. This sample was drawn at step {step}"
                + (
                    ", between them: the change is its own update and those of the other steps between the two."
                    if updates(earlier) < step <= updates(later)
                    else ", outside them: the change is other steps' updates alone, not this sample's own."
                )
                + f" Green: likelier under the second; red: less likely (hover a token for its figures; "
                f"log-probabilities and probabilities at the run's sampling temperature, {view.temperature:g})."
                + (
                    ""
                    if view.recorded
                    else " This run did not record its sampled token ids: the text was tokenised again."
                )
            )
            show_tokens(view.tokens)
            st.dataframe(
                token_table(view.tokens),
                hide_index=True,
                column_config={
                    **{
                        c: st.column_config.NumberColumn(format="%.3f")
                        for c in ("logprob before", "logprob after", "change", "entropy before", "entropy after")
                    },
                    **{
                        c: st.column_config.NumberColumn(format="percent")
                        for c in ("probability before", "probability after")
                    },
                },
            )

st.subheader("Its group: all samples of this prompt at this step")
group = store.group(prompt_id, step, settings)
st.caption(
    "The advantage TRL logged for each sample (its completions table)."
    if group.attrs["logged"]
    else f"The advantage of each sample as TRL computes it, recomputed here from the rewards by core/advantage.py "
    f"(tested equal to TRL's) for {'TRL' if trl else 'this run'}'s {'default ' if trl else ''}settings: "
    f"{formula(settings)}" + (". This TRL run's completions table has no advantage column." if trl else ".")
)
for start in range(0, len(group), 4):
    cols = st.columns(4)
    for col, (_, g) in zip(cols, group.iloc[start : start + 4].iterrows()):
        with col.container(border=True):
            marker = "▶ " if g["sample"] == sample else ""
            st.markdown(
                f"**{marker}sample {g['sample']}** · reward **{g['reward']:g}** · advantage **{g['advantage']:+.2f}**"
            )
            st.code(g["completion"], language=None, wrap_lines=True)


with st.expander("One GRPO step, worked through: from this group's rewards to the weight on each token"):
    if trl:
        st.info(
            "A TRL run keeps its settings in training_args.bin, a pickle this dashboard does not load (it could "
            "run code), and no token counts: the worked step needs both."
            + (" The advantages above are TRL's own." if group.attrs["logged"] else "")
        )
        st.stop()
    if settings["loss_type"] not in LOSS_SPREADS:
        st.info(f"This run's loss_type, {settings['loss_type']}, weighs tokens in a way this view does not show.")
        st.stop()
    worked, facts = store.worked_step(prompt_id, step, settings)
    grpo = config.get("grpo")
    if missing := left_out(grpo if isinstance(grpo, dict) else {}):
        st.warning(
            f"This run sets TRL options the figures below leave out: {'; '.join(missing)}. They follow TRL's "
            "loss without them (core/loss.py).",
            icon=":material/warning:",
        )
    reused = reuse(store.run_dir)
    each_update = store.updates(prompt_id, step, settings) if reused > 1 else []
    if reused > 1:
        st.warning(
            f"This run trains each batch of samples for {reused:g} updates (grpo.steps_per_generation, "
            "generation_batch_size or num_iterations). Steps 1–5 are the first of them, where the model is "
            "still the one that sampled (ratio 1, the clip idle); "
            + (
                "step 6 walks each update that trained this group, with the ratios and the clip as they were."
                if each_update
                else "this run recorded no later ones (a run from before updates/ was written): the clip_ratio "
                f"of the next {reused - 1:g} steps (Runs page) says what share of tokens the clip cut."
            ),
            icon=":material/repeat:",
        )
    scored = [r if isinstance(r, dict) else {} for r in worked["rewards"]]  # a hand-written record may lack them
    names = list(settings["weights"]) or sorted({n for r in scored for n in r})
    weights = {n: settings["weights"].get(n, 1.0) for n in names}
    st.markdown(
        "**1 · Rewards.** Each reward function scores the sample; its reward is their weighted sum: "
        + " + ".join(f"{w:g} × {n}" for n, w in weights.items())
        + "."
    )
    if settings["aggregation"] == "normalize_then_sum":
        st.markdown(
            "**2 · The group.** This run normalises each reward function within the group first "
            "(multi_objective_aggregation: normalize_then_sum), then their weighted sum over the step's batch."
        )
    else:
        st.markdown(
            f"**2 · The group.** Its {len(worked)} samples' rewards have mean **{facts['group_mean']:.4f}** and "
            f"standard deviation **{facts['group_std']:.4f}** (divided by K − 1, as torch.std); the step's "
            f"whole batch of rewards, {facts['batch_std']:.4f}."
        )
    st.markdown(
        f"**3 · Advantage.** {formula(settings)}"
        + (f" (scale_rewards: {settings['scale_rewards']})" if settings["aggregation"] == "sum_then_normalize" else "")
        + ": "
        "above the group's mean is positive, below negative, and a group of equal rewards gives 0 to all."
    )
    st.markdown(
        f"**4 · Spread over tokens.** loss_type {settings['loss_type']}: each token of a sample gets weight "
        f"{LOSS_SPREADS[settings['loss_type']]}. This step had **{facts['samples']:g}** samples and "
        f"**{facts['tokens']:,.0f}** completion tokens on all ranks"
        + (
            f" (its batch of samples split into {settings['steps_per_batch']:g} optimizer steps: one step's share, "
            "on average)"
            if settings["steps_per_batch"] != 1
            else ""
        )
        + f"; max_completion_length {settings['max_completion_length']}."
    )
    st.markdown(
        "**5 · The push on each token** is advantage × weight: minus the gradient of the run's loss "
        "(core/loss.py, by autograd; tested equal to TRL's own) with respect to each of the sample's token "
        "log-probabilities, on the first update of a batch of samples, where the new and old probabilities are "
        "equal and PPO's clip leaves it whole. Positive: each token made likelier; negative: less likely."
        + (
            f" The loss also holds each token near the starting model: a KL term of weight beta {settings['beta']:g}, "
            "not in these figures (its mean is the step's kl below)."
            if settings["beta"]
            else ""
        )
    )
    table = {"sample": worked["sample"]}
    for n in names:
        table[n] = [r.get(n) for r in scored]
    table |= {
        "reward": worked["reward"],
        "advantage": worked["advantage"],
        "tokens": worked["completion_tokens"],
        "weight per token": worked["token_weight"],
        "push per token": worked["push"],
        "push × tokens": worked["push"] * worked["completion_tokens"].fillna(0),
    }
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "advantage": st.column_config.NumberColumn(format="%+.4f"),
            "weight per token": st.column_config.NumberColumn(format="%.3e"),
            "push per token": st.column_config.NumberColumn(format="%+.3e"),
            "push × tokens": st.column_config.NumberColumn(
                format="%+.3e", help="the sample's whole share of the update"
            ),
        },
    )
    logged = facts["metrics"]
    st.caption(
        "What TRL logged for this step: "
        + (
            " · ".join(f"{name} {value:.4g}" for name, value in logged.items())
            if logged
            else "nothing (no metrics line for this step)"
        )
    )

    if each_update:
        st.markdown(
            "**6 · Each update of the batch.** By a later update the model has moved since it sampled: a "
            "token's ratio (its probability now over then) is no longer 1, and PPO's clip cuts a token whose "
            'ratio strayed past 1 ± epsilon the way its advantage pushes (README, "What GRPO does here"). '
            "For each update that trained some of this group's samples: the ratios TRL's loss saw (updates/, "
            "recorded while training) and core/loss.py's push on them, over the update's whole batch."
        )
        for update, rows in each_update:
            st.markdown(f"**Update at step {update}**: {len(rows)} of this group's samples.")
            st.dataframe(
                {
                    "sample": rows["sample"],
                    "advantage": rows["advantage"],
                    "tokens": rows["tokens"],
                    "mean ratio": rows["ratio"],
                    "lowest ratio": rows["ratio_low"],
                    "highest ratio": rows["ratio_high"],
                    "tokens cut by the clip": rows["cut"],
                    "push per token (mean)": rows["push"],
                },
                hide_index=True,
                column_config={
                    "advantage": st.column_config.NumberColumn(format="%+.4f"),
                    "mean ratio": st.column_config.NumberColumn(format="%.4f"),
                    "lowest ratio": st.column_config.NumberColumn(format="%.4f"),
                    "highest ratio": st.column_config.NumberColumn(format="%.4f"),
                    "tokens cut by the clip": st.column_config.NumberColumn(format="percent"),
                    "push per token (mean)": st.column_config.NumberColumn(format="%+.3e"),
                },
            )
