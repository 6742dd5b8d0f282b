"""Faults in `r1v2 train`, through the real CLI in subprocesses, on a tiny SFT run (the
stage with the cheapest step; every stage shares the loop and the trainer base):

- bad overrides and impossible recipes: one line naming the field, exit 2, before any load;
- SIGTERM mid-run: the step in flight finishes, its checkpoint is written, exit 143, and
  the same command resumes from it;
- an exception while an async checkpoint is being written: the checkpoint survives;
- a corrupt newest checkpoint: resume falls back to the previous one and says so;
- a changed config on resume: refused with the differing keys, config.json untouched;
- non-finite updates: the run stops after train.max_nonfinite_steps, exit 2.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from r1v2_jax.convert import save_jax_checkpoint
from r1v2_jax.data.tokenizer import build_demo_tokenizer
from tests.reliability._cli import REPO, assert_user_error, run_cli, start_cli
from tests.reliability.conftest import random_tree, tiny_config

RESPONSE = "<think>\nthe answer is three.\n</think>\n\n\\boxed{3}"


@pytest.fixture(scope="module")
def run_args(tmp_path_factory):
    """(workdir-less `r1v2 train` argv of a tiny SFT recipe, root folder)."""
    root = tmp_path_factory.mktemp("train")
    tokenizer = build_demo_tokenizer(["how", "many", "circles", "the", "answer", "is", "three"])
    config = tiny_config(vocab_size=tokenizer.vocab_size, image_token_id=tokenizer.img_context_id)
    save_jax_checkpoint(config, random_tree(config), root / "ckpt")
    tokenizer.save(root / "tokenizer.json")
    rows = [{"question": f"how many circles {i}", "response": RESPONSE} for i in range(6)]
    (root / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["train", "--config", f"{REPO / 'configs' / 'sft_38b.py'}:smoke",
            f"--config.init.checkpoint={root / 'ckpt'}",
            f"--config.tokenizer={root / 'tokenizer.json'}",
            f"--config.data.train={root / 'sft.jsonl'}", "--config.mesh.ici.tensor=1"]
    return args, root


def _steps_saved(workdir: Path) -> list[int]:
    ckpt = workdir / "checkpoints"
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.exists() else []


@pytest.mark.parametrize("extra,fragments", [
    (["--config.optim.lr=abc"], ["config.optim.lr: expected a float, got 'abc'"]),
    (["--config.train.steps=2.5"], ["config.train.steps: expected an int, got '2.5'"]),
    (["--config.ssb.enabled=false"], ["config.ssb.enabled: no such field"]),
    (["--config.data.train=/nonexistent.jsonl"], ["config.data.train: /nonexistent.jsonl does not exist"]),
    (["--config.train.steps=0"], ["config.train.steps must be >= 1"]),
], ids=["float", "int", "unknown-key", "missing-file", "zero-steps"])
def test_bad_overrides_are_one_line_before_any_load(run_args, tmp_path, extra, fragments):
    args, _ = run_args
    t0 = time.time()
    result = run_cli([*args, "--workdir", tmp_path / "w", *extra])
    assert_user_error(result, "train", *fragments)
    assert not (tmp_path / "w").exists()  # nothing written, not even config.json
    assert time.time() - t0 < 60


def test_reward_weight_without_a_reward_model_is_refused_before_loading(run_args, tmp_path):
    _, root = run_args
    result = run_cli(["train", "--config", f"{REPO / 'configs' / 'grpo_38b.py'}:smoke",
                      "--workdir", tmp_path / "w", f"--config.init.checkpoint={root / 'ckpt'}",
                      f"--config.data.train={root / 'sft.jsonl'}",
                      f"--config.data.heldout={root / 'sft.jsonl'}"])
    assert_user_error(result, "train", "config.reward.rm_checkpoint is empty: reward.w_rm=0.5")
    result = run_cli(["train", "--config", f"{REPO / 'configs' / 'grpo_38b.py'}:smoke",
                      "--workdir", tmp_path / "w", f"--config.init.checkpoint={root / 'ckpt'}",
                      f"--config.data.train={root / 'sft.jsonl'}",
                      f"--config.data.heldout={root / 'sft.jsonl'}",
                      "--config.rollout.num_generations=1", "--config.reward.w_rm=0"])
    assert_user_error(result, "train", "config.rollout.num_generations must be >= 2")


def test_sigterm_saves_the_finished_step_and_the_run_resumes(run_args, tmp_path):
    args, _ = run_args
    workdir = tmp_path / "w"
    cmd = [*args, "--workdir", workdir, "--config.train.steps=100000",
           "--config.train.checkpoint_every=0"]  # no periodic save: only the signal's
    proc = start_cli(cmd)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and
                                          len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    last = json.loads(metrics.read_text().splitlines()[-1])["step"]
    assert _steps_saved(workdir) == [last] and "interrupted: saving step" in out
    again = run_cli([*cmd[:-2], f"--config.train.steps={last + 2}", "--config.train.checkpoint_every=0",
                     "--allow-config-change"], timeout=240)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resumed from step {last}" in again.stdout
    assert (workdir / "final" / "model_config.json").exists()


def test_a_crash_during_an_async_save_keeps_that_checkpoint(run_args, tmp_path):
    args, _ = run_args
    workdir = tmp_path / "w"
    crash = ("from r1v2_jax.train.sft import SFTTrainer\n"
             "_step = SFTTrainer.train_step\n"
             "def train_step(self):\n"
             "    if self.step == 2:\n"
             "        raise RuntimeError('planted crash')\n"
             "    return _step(self)\n"
             "SFTTrainer.train_step = train_step\n")
    result = run_cli([*args, "--workdir", workdir, "--config.train.steps=5",
                      "--config.train.checkpoint_every=1", "--config.train.async_checkpoint=true"],
                     inject=crash, timeout=240)
    assert result.returncode == 1 and "planted crash" in result.stderr
    assert _steps_saved(workdir)[-1] == 2  # the save started at step 2 was finished


def test_corrupt_newest_checkpoint_falls_back_and_config_changes_are_refused(run_args, tmp_path):
    args, _ = run_args
    workdir = tmp_path / "w"
    cmd = [*args, "--workdir", workdir, "--config.train.steps=3",
           "--config.train.checkpoint_every=1"]
    assert run_cli(cmd, timeout=240).returncode == 0
    assert _steps_saved(workdir) == [2, 3]
    for f in (workdir / "checkpoints" / "3" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\0" * 7)  # truncated garbage
    saved = (workdir / "config.json").read_text()
    changed = run_cli([*cmd, "--config.optim.lr=0.5"])
    assert_user_error(changed, "train", "holds a run with another config", "optim.lr: 1e-05 -> 0.5")
    assert (workdir / "config.json").read_text() == saved
    resumed = run_cli([*cmd[:-2], "--config.train.steps=4", "--config.train.checkpoint_every=1",
                       "--allow-config-change"], timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint step 3" in resumed.stdout and "unreadable" in resumed.stdout
    assert "resumed from step 2 (skipped unreadable checkpoint(s) [3])" in resumed.stdout


def test_non_finite_updates_stop_the_run(run_args, tmp_path):
    args, _ = run_args
    result = run_cli([*args, "--workdir", tmp_path / "w", "--config.train.steps=50",
                      "--config.optim.lr=1e30", "--config.optim.clip_norm=0.0",
                      "--config.train.max_nonfinite_steps=2", "--config.train.checkpoint_every=0"],
                     timeout=240)
    assert_user_error(result, "train", "2 consecutive steps", "non-finite loss or gradient",
                      "train.max_nonfinite_steps=2")
    lines = [json.loads(x) for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) < 10 and all(json.dumps(x) for x in lines)
