"""The rehearsal of launch/README.md on a tiny checkpoint (tests/recipes/rehearsal_worker.py,
in a subprocess with 8 simulated CPU devices so every recipe runs on its own mesh):
release (layout A, Qwen2-style tokenizer with special tokens and chat template) -> convert
to-jax -> sft -> rm -> mpo -> grpo with the reward model -> final/ -> convert to-hf ->
transformers + AutoProcessor -> r1v2 eval; each stage killed after a step and resumed.

The train commands are the ones `launch/tpu_pod.sh --dry-run` prints for a worker.
Then GRPO again with 2 JAX processes (4 devices each) from the same files."""

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
XLA = "--xla_force_host_platform_device_count={n} --xla_backend_optimization_level=0"


def _env(devices: int) -> dict:
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=XLA.format(n=devices),
                PYTHONPATH=str(ROOT))


def launch_commands(tmp: Path) -> dict[str, list[str]]:
    """stage -> the `r1v2 train ...` command line the TPU launcher runs on every worker,
    with placeholders for the files of this rehearsal."""
    from tests.recipes.rehearsal_worker import STAGES

    out = {}
    for stage, recipe in STAGES:
        args = [f"--config={ROOT / recipe}", "--workdir={workdir}",
                "--config.init.checkpoint={init}"]
        if stage == "sft":
            args += ["--config.data.train={sft}", "--config.data.heldout={heldout}"]
        elif stage == "rm":
            args += ["--config.data.train={prefs}", "--config.data.heldout={prefs}"]
        else:
            args += ["--config.data.train={prompts}", "--config.data.heldout={heldout}",
                     "--config.reward.rm_checkpoint={rm}"]
            if stage == "mpo":
                args.append("--config.data.preferences={prefs}")
        dry = subprocess.run(
            ["bash", str(ROOT / "launch" / "tpu_pod.sh"), "--name", "r1v2-test", "--zone",
             "us-east5-a", "--allow-local-workdir", "--dry-run", "train", "--", *args],
            capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PATH=os.environ["PATH"]))
        assert dry.returncode == 0, dry.stderr
        ssh = [shlex.split(line[2:]) for line in dry.stdout.splitlines()
               if line.startswith("+ ") and "r1v2 train" in line]
        assert len(ssh) == 1, dry.stdout
        remote = ssh[0][ssh[0].index("--command") + 1]  # what every worker's shell runs
        argv = shlex.split(remote.split("&&")[-1])
        assert argv[:2] == ["r1v2", "train"], remote
        out[stage] = argv[1:]
    return out


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("rehearsal")
    commands = out / "commands.json"
    commands.write_text(json.dumps(launch_commands(out)))
    run = subprocess.run([sys.executable, "-m", "tests.recipes.rehearsal_worker", "--out",
                          str(out), "--commands", str(commands)], cwd=ROOT, env=_env(8),
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    return out, json.loads((out / "results.json").read_text())


def test_every_stage_trains_two_steps_on_the_recipes_mesh(rehearsal):
    _, r = rehearsal
    assert r["devices"] == 8
    for stage in ("sft", "rm", "mpo", "grpo"):
        assert r[stage]["steps"] == 2, stage
    assert {"loss", "grad_norm"} <= set(r["sft"]["keys"])
    assert {"eval_pair_accuracy", "accuracy", "margin"} <= set(r["rm"]["keys"])
    assert {"pref_accuracy", "pool_size"} <= set(r["mpo"]["keys"])
    assert {"reward_mean", "effective_ratio_batch", "eval_accuracy"} <= set(r["grpo"]["keys"])
    for stage in ("sft", "rm", "mpo", "grpo"):  # every stage streamed its training records
        assert "data/decode_failures" in r[stage]["keys"], stage


def test_every_stage_resumes_exactly_after_a_kill(rehearsal):
    _, r = rehearsal
    for stage in ("sft", "rm", "mpo", "grpo"):
        assert r[stage]["resume_same_keys"], stage
        assert r[stage]["resume_max_diff"] == 0.0, (stage, r[stage]["resume_max_diff"])


def test_final_models_chain_and_export_to_transformers(rehearsal):
    out, r = rehearsal
    for stage in ("sft", "rm", "mpo", "grpo"):
        final = out / "runs" / stage / "final"
        assert (final / "model_config.json").exists() and (final / "tokenizer_config.json").exists()
    assert (out / "runs" / "rm" / "final" / "calibration.json").exists()
    assert r["hf"]["max_abs_logit_diff"] <= 1e-4, r["hf"]
    assert r["hf"]["num_image_tokens"] == 4 * r["hf"]["num_tiles"]


def test_eval_reports_accuracy_by_answer_type(rehearsal):
    out, r = rehearsal
    ev = r["eval"]
    assert ev["num_items"] == 2 and set(ev["by_answer_type"]) == {"number", "choice"}
    assert 0.0 <= ev["eval_pass_at_k"] <= 1.0
    items = (out / "eval" / "items.jsonl").read_text().splitlines()
    assert len(items) == 2 and len(json.loads(items[0])["samples"]) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_grpo_with_two_jax_processes(rehearsal, tmp_path):
    out, _ = rehearsal
    data = out / "data"
    port = _free_port()
    args = ["train", "--config", str(ROOT / "configs/grpo_38b.py:smoke"), "--workdir",
            str(tmp_path / "grpo2"), f"--config.init.checkpoint={out / 'runs/mpo/final'}",
            f"--config.data.train={data / 'prompts.jsonl'}",
            f"--config.data.heldout={data / 'heldout.jsonl'}",
            f"--config.reward.rm_checkpoint={out / 'runs/rm/final'}",
            "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    procs = [subprocess.Popen([sys.executable, "-m", "r1v2_jax.cli", *args, "--process-id",
                               str(i)], cwd=ROOT, env=_env(4), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(x[-3000:] for x in logs)
    from tests.recipes.rehearsal_worker import flat_params

    two = flat_params(str(tmp_path / "grpo2" / "final"))
    one = flat_params(str(out / "runs" / "grpo" / "final"))
    assert sorted(two) == sorted(one)
    assert max(float(np.abs(two[k] - one[k]).max()) for k in one) < 1e-5
