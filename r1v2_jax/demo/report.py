"""The demo's summary table (Markdown) and plots (PNG)."""

from __future__ import annotations

import os
from typing import Any, Callable

from r1v2_jax.train.metrics import read_metrics

ROWS = (("start", "random init"), ("prior", "answer prior (no image)"),
        ("warmstart", "warm start (SFT)"), ("mpo", "MPO"), ("grpo", "GRPO + SSB"),
        ("grpo_no_ssb", "GRPO, no SSB"))
OBJECTIVES = (("mpo", "MPO"), ("dpo", "DPO"), ("sft", "SFT"))


def _mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def summary_table(out: str, results: dict[str, Any]) -> str:
    k = next((int(r["eval_num_samples"]) for r in results.values()
              if isinstance(r, dict) and "eval_num_samples" in r), 0)
    lines = ["| stage | held-out accuracy | format rate | hallucination rate | sampled accuracy (T>0) | "
             f"pass@{k or 'k'} | effective share (update batch) | replay share |",
             "|---|---|---|---|---|---|---|---|"]
    for key, label in ROWS:
        r = results.get(key)
        if not r or "eval_accuracy" not in r:
            continue
        eff = rep = "-"
        path = os.path.join(out, key)
        if key.startswith("grpo") and os.path.exists(os.path.join(path, "metrics.jsonl")):
            steps = [m for m in read_metrics(path) if "effective_ratio_batch" in m]
            eff = f"{_mean([m['effective_ratio_batch'] for m in steps]):.2f} (min {min(m['effective_ratio_batch'] for m in steps):.2f})"
            rep = f"{_mean([m.get('replay_ratio', 0.0) for m in steps]):.2f}"
        if "eval_format_rate" not in r:  # a baseline that generates nothing (the answer prior)
            lines.append(f"| {label} | {r['eval_accuracy']:.3f} | - | - | - | - | - | - |")
            continue
        sampled = (f"{r['eval_sampled_accuracy']:.3f} | {r['eval_pass_at_k']:.3f}"
                   if "eval_pass_at_k" in r else "- | -")
        lines.append(f"| {label} | {r['eval_accuracy']:.3f} | {r['eval_format_rate']:.3f} | "
                     f"{r['eval_hallucination_rate']:.3f} | {sampled} | {eff} | {rep} |")
    return "\n".join(lines)


def vision_line(results: dict[str, Any]) -> str:
    v = results.get("vision")
    if not v:
        return ""
    return ("Vision stage: probe accuracy on held-out scenes " + ", ".join(
        f"{k[len('probe_accuracy_'):]} {x:.3f}" for k, x in v.items()
        if k.startswith("probe_accuracy_")) + ".")


def reward_model_line(results: dict[str, Any]) -> str:
    rm = results.get("rm")
    if not rm:
        return ""
    kinds = ", ".join(f"{k[len('rm_heldout_accuracy_'):]} {v:.2f}" for k, v in sorted(rm.items())
                      if k.startswith("rm_heldout_accuracy_"))
    return (f"Reward model: held-out pair ranking accuracy {rm['rm_heldout_pair_accuracy']:.3f} "
            f"(by corruption: {kinds}).")


def objectives_table(results: dict[str, Any]) -> str:
    """The paper's Table 3 at toy scale: each objective trained on the same pairs."""
    cmp = results.get("compare")
    if not cmp:
        return ""
    start = results.get("warmstart") or results.get("start")
    lines = [f"Objectives on the same {cmp['pairs']} pairs (from the warm-start policy):", "",
             "| objective | held-out accuracy | format rate | hallucination rate |",
             "|---|---|---|---|"]
    rows = ([("none (warm start)", start)] if start else []) + [
        (label, cmp[key]) for key, label in OBJECTIVES if key in cmp]
    for label, r in rows:
        lines.append(f"| {label} | {r['eval_accuracy']:.3f} | {r['eval_format_rate']:.3f} | "
                     f"{r['eval_hallucination_rate']:.3f} |")
    return "\n".join(lines)


def _effective_shares(path: str) -> list[float]:
    if not os.path.exists(os.path.join(path, "metrics.jsonl")):
        return []
    return [m["effective_ratio_batch"] for m in read_metrics(path) if "effective_ratio_batch" in m]


def _p10(xs: list[float]) -> float:
    import numpy as np
    return float(np.percentile(xs, 10)) if xs else float("nan")


def ssb_table(out: str, results: dict[str, Any]) -> str:
    """The paper's Table 2 at toy scale: GRPO with and without the SSB from the same policy."""
    arms = [(k, label) for k, label in (("grpo", "with SSB"), ("grpo_no_ssb", "without SSB"))
            if k in results]
    if not arms:
        return ""
    lines = ["GRPO with and without the Selective Sample Buffer (same start, same budget):", "",
             "| GRPO | effective share of the update batch: mean | 10th percentile | min | "
             "held-out accuracy | sampled accuracy |", "|---|---|---|---|---|---|"]
    for key, label in arms:
        eff, r = _effective_shares(os.path.join(out, key)), results[key]
        sampled = f"{r['eval_sampled_accuracy']:.3f}" if "eval_sampled_accuracy" in r else "-"
        lines.append(f"| {label} | {_mean(eff):.2f} | {_p10(eff):.2f} | "
                     f"{min(eff, default=float('nan')):.2f} | {r['eval_accuracy']:.3f} | {sampled} |")
    return "\n".join(lines)


def behaviour_table(results: dict[str, Any]) -> str:
    """How often sampled responses take the warm start's shortcut, each behaviour's
    accuracy, and the hallucination rate of all sampled responses and of the careful ones
    (a guess names no shape, so only those can hallucinate; data/synthetic.TraceMix)."""
    rows = [(label, results[k]) for k, label in ROWS
            if isinstance(results.get(k), dict) and "eval_sampled_shortcut_rate" in results[k]]
    if not rows:
        return ""
    lines = ["Behaviours of the sampled responses (shortcut = a guess without counting):", "",
             "| stage | shortcut share | accuracy when careful | accuracy when shortcut | "
             "hallucination (all sampled) | hallucination when careful |",
             "|---|---|---|---|---|---|"]
    nan = float("nan")
    for label, r in rows:
        lines.append(f"| {label} | {r['eval_sampled_shortcut_rate']:.3f} | "
                     f"{r['eval_sampled_careful_accuracy']:.3f} | "
                     f"{r['eval_sampled_shortcut_accuracy']:.3f} | "
                     f"{r.get('eval_sampled_hallucination_rate', nan):.3f} | "
                     f"{r.get('eval_sampled_careful_hallucination_rate', nan):.3f} |")
    return "\n".join(lines)


def seen_unseen_table(results: dict[str, Any]) -> str:
    """Sampled accuracy on prompts GRPO trained on (its first steps' prompts) against the
    held-out ones, before GRPO (the MPO policy) and after each arm: does a gain carry?"""
    before = results.get("mpo")
    if not before or "seen_sampled_accuracy" not in before:
        return ""
    lines = ["Seen vs unseen prompts (sampled accuracy, fixed prompts; seen = the prompts of "
             "GRPO's first steps, unseen = the held-out prompts):", "",
             "| policy | seen | unseen | seen gain | unseen gain |", "|---|---|---|---|---|"]
    s0, u0 = before["seen_sampled_accuracy"], before["eval_sampled_accuracy"]
    lines.append(f"| before GRPO (MPO) | {s0:.3f} | {u0:.3f} | - | - |")
    for key, label in (("grpo", "GRPO + SSB"), ("grpo_no_ssb", "GRPO, no SSB")):
        r = results.get(key)
        if r and "seen_sampled_accuracy" in r:
            s, u = r["seen_sampled_accuracy"], r["eval_sampled_accuracy"]
            lines.append(f"| {label} | {s:.3f} | {u:.3f} | {s - s0:+.3f} | {u - u0:+.3f} |")
    return "\n".join(lines)


def trainable_table(out: str, results: dict[str, Any]) -> str:
    """The paper's Table 4 at toy scale: GRPO + SSB training one part, the same budget."""
    parts = results.get("trainable")
    if not parts:
        return ""
    lines = ["GRPO + SSB by trainable part (same start, same budget):", "",
             "| trainable | held-out accuracy | sampled accuracy | hallucination rate |",
             "|---|---|---|---|"]
    for part, r in parts.items():
        sampled = f"{r['eval_sampled_accuracy']:.3f}" if "eval_sampled_accuracy" in r else "-"
        lines.append(f"| {part} | {r['eval_accuracy']:.3f} | {sampled} | "
                     f"{r['eval_hallucination_rate']:.3f} |")
    return "\n".join(lines)


def plot_runs(out: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {name: read_metrics(os.path.join(out, name)) for name in ("grpo", "grpo_no_ssb")
            if os.path.exists(os.path.join(out, name, "metrics.jsonl"))}
    written = []
    if not runs:
        return written
    panels = (("reward_mean", "mean reward (fresh rollouts)"),
              ("accuracy", "training accuracy (fresh rollouts)"),
              ("effective_ratio_fresh", "effective share: fresh samples"),
              ("effective_ratio_batch", "effective share: update batch"))
    if any("probe/accuracy" in m for rows in runs.values() for m in rows):  # config.probe on
        panels += (("probe/accuracy", "probe accuracy (fixed held-out prompts)"),)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (key, title) in zip(axes, panels):
        for name, rows in runs.items():
            # the probe's curve starts at step 0 (the policy before GRPO)
            first = 0 if key.startswith("probe/") else 1
            pts = [(m["step"], m[key]) for m in rows if key in m and m["step"] >= first]
            if pts:
                ax.plot(*zip(*pts), label="with SSB" if name == "grpo" else "without SSB")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, "grpo_curves.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def write_report(out: str, results: dict[str, Any], log: Callable[[str], None] = print) -> str:
    parts = (summary_table(out, results), vision_line(results), reward_model_line(results),
             behaviour_table(results), seen_unseen_table(results), ssb_table(out, results), objectives_table(results),
             trainable_table(out, results))
    table = "\n\n".join(x for x in parts if x)
    plots = plot_runs(out)
    text = "# r1v2 demo summary\n\n" + table + "\n\n" + "\n".join(f"![]({os.path.basename(p)})" for p in plots) + \
        f"\n\nTotal time: {results.get('seconds', 0):.0f} s\n"
    path = os.path.join(out, "summary.md")
    with open(path, "w") as f:
        f.write(text)
    log("\n" + table + "\n")
    log(f"summary: {path}; plots: {', '.join(plots) or '(none)'}")
    return path
