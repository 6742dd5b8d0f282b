"""launch/slurm_gpu.sh: the generated sbatch file, read and also executed against fake
`scontrol` / `srun` / `r1v2` that simulate the SLURM tasks on this machine."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

TRAIN_ARGS = ["--config", "configs/grpo_38b.py", "--workdir", "/nfs/runs/grpo",
              "--config.note=it's \"quoted\" $HOME & more"]

# Runs the command after its options once per task, with the task's SLURM variables.
FAKE_SRUN = """#!{python}
import json, os, subprocess, sys
args = sys.argv[1:]
cut = next(i for i, a in enumerate(args) if not a.startswith("--"))
opts = dict(a[2:].partition("=")[::2] for a in args[:cut])
with open(os.environ["FAKE_CALLS"], "a") as calls:
    calls.write(json.dumps(["srun"] + args[:cut]) + "\\n")
ntasks, per_node = int(opts["ntasks"]), int(opts["ntasks-per-node"])
for rank in range(ntasks):
    env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank % per_node), SLURM_NTASKS=str(ntasks))
    code = subprocess.run(args[cut:], env=env).returncode
    if code:
        sys.exit(code)
"""
FAKE_SCONTROL = """#!/bin/bash
[ "$1 $2 $3" = "show hostnames gpu[07-08]" ] || exit 1
printf 'gpu07\\ngpu08\\n'
"""
FAKE_R1V2 = """#!{python}
import json, os, sys
with open(os.environ["FAKE_R1V2_OUT"], "a") as out:
    out.write(json.dumps({{"argv": sys.argv[1:], "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}}) + "\\n")
"""


def sbatch_file(stdout: str) -> str:
    """The script text of a dry run: from the shebang up to the `+ sbatch` line."""
    text = stdout[stdout.index("#!/bin/bash"):]
    return text[: text.index("\n+ sbatch ") + 1]


def directives(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=?(.*)$", script, flags=re.M))


def run_job(sandbox, script: str, ntasks: int, venv: bool = True, **env: str) -> tuple[subprocess.CompletedProcess, list]:
    """Executes the sbatch file as SLURM would on the first node of gpu[07-08], job 12345."""
    sandbox.script("srun", FAKE_SRUN.format(python=sys.executable))
    sandbox.script("scontrol", FAKE_SCONTROL)
    if venv:
        bin_dir = sandbox.root / "venv" / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "activate").write_text(f'PATH="{bin_dir}:$PATH"\n')
        (bin_dir / "r1v2").write_text(FAKE_R1V2.format(python=sys.executable))
        (bin_dir / "r1v2").chmod(0o755)
    (sandbox.root / "job.sbatch").write_text(script)
    out_file = sandbox.root / "r1v2_calls.jsonl"
    result = subprocess.run(
        ["bash", "job.sbatch"], cwd=sandbox.root, capture_output=True, text=True, timeout=60,
        env=sandbox.env(SLURM_JOB_NODELIST="gpu[07-08]", SLURM_JOB_ID="12345", SLURM_NTASKS=str(ntasks),
                        FAKE_R1V2_OUT=str(out_file), **env),
    )
    records = [json.loads(line) for line in out_file.read_text().splitlines()] if out_file.exists() else []
    return result, records


def test_dry_run_prints_the_sbatch_file_and_command_and_submits_nothing(sandbox):
    result = sandbox.run(
        "slurm_gpu.sh", "--nodes", "4", "--gpus-per-node", "8", "--time", "2-00:00:00", "--partition", "gpu",
        "--account", "proj", "--qos", "high", "--cpus-per-task", "64", "--requeue", "--sbatch-opt=--exclusive",
        "--setup", "module load cuda/12.4", "--venv", "/nfs/venv", "--dry-run", "--", *TRAIN_ARGS,
    )
    assert result.returncode == 0, result.stderr
    assert sandbox.calls() == [] and not (sandbox.root / "runs").exists()
    script = sbatch_file(result.stdout)
    assert directives(script) == {
        "job-name": "r1v2-train", "nodes": "4", "ntasks": "4", "ntasks-per-node": "1", "gpus-per-node": "8",
        "time": "2-00:00:00", "partition": "gpu", "account": "proj", "qos": "high", "cpus-per-task": "64",
        "output": f"{sandbox.root}/runs/slurm-logs/%x-%j.out", "chdir": str(sandbox.repo_root),
        "requeue": "", "exclusive": "",
    }
    assert "\nmodule load cuda/12.4\n" in script and "export R1V2_VENV=/nfs/venv\n" in script
    assert 'node_names=$(scontrol show hostnames "$SLURM_JOB_NODELIST")' in script
    assert "srun --nodes=4 --ntasks=4 --ntasks-per-node=1 --kill-on-bad-exit=1 --cpus-per-task=64 bash -c" in script
    assert "CUDA_VISIBLE_DEVICES" not in script  # one process per node sees all its GPUs
    (submit,) = sandbox.commands(result.stdout)
    assert submit.argv[0] == "sbatch" and re.fullmatch(
        rf"{sandbox.root}/runs/slurm-logs/r1v2-train-\d{{8}}T\d{{6}}Z\.sbatch", submit.argv[1])


def test_one_process_per_node_joins_the_first_node_as_coordinator(sandbox):
    out = sandbox.run("slurm_gpu.sh", "--nodes", "2", "--venv", str(sandbox.root / "venv"), "--dry-run", "--", *TRAIN_ARGS)
    result, records = run_job(sandbox, sbatch_file(out.stdout), ntasks=2)
    assert result.returncode == 0, result.stderr
    assert "r1v2: 2 processes, coordinator gpu07:32345" in result.stdout  # 20000 + 12345 % 20000
    expected = [["train", *TRAIN_ARGS, "--coordinator", "gpu07:32345", "--num-processes", "2", "--process-id", str(p)]
                for p in range(2)]
    assert [r["argv"] for r in records] == expected
    assert [r["cuda"] for r in records] == [None, None]


@pytest.mark.parametrize("node_gpus, expected", [(None, ["0", "1", "0", "1"]), ("4,6", ["4", "6", "4", "6"])])
def test_one_process_per_gpu_gets_its_own_gpu(sandbox, node_gpus, expected):
    out = sandbox.run("slurm_gpu.sh", "--nodes", "2", "--gpus-per-node", "2", "--process-per", "gpu", "--port", "23456",
                      "--venv", str(sandbox.root / "venv"), "--dry-run", "--", *TRAIN_ARGS)
    assert "#SBATCH --ntasks=4\n#SBATCH --ntasks-per-node=2\n" in out.stdout
    env = {"CUDA_VISIBLE_DEVICES": node_gpus} if node_gpus else {}
    result, records = run_job(sandbox, sbatch_file(out.stdout), ntasks=4, **env)
    assert result.returncode == 0, result.stderr
    assert [r["argv"][-6:] for r in records] == [
        ["--coordinator", "gpu07:23456", "--num-processes", "4", "--process-id", str(p)] for p in range(4)]
    assert [r["cuda"] for r in records] == expected


@pytest.mark.parametrize(
    "venv_option, make_venv, message",
    [(["--venv", "/nowhere/venv"], False, "r1v2: no venv at /nowhere/venv"), ([], False, "not on PATH")],
)
def test_job_fails_clearly_without_r1v2(sandbox, venv_option, make_venv, message):
    out = sandbox.run("slurm_gpu.sh", *venv_option, "--dry-run", "--", *TRAIN_ARGS)
    result, records = run_job(sandbox, sbatch_file(out.stdout), venv=make_venv, ntasks=1)
    assert result.returncode == 1 and message in result.stderr and records == []


def test_container_flags_go_on_srun(sandbox):
    out = sandbox.run("slurm_gpu.sh", "--container-image", "nvcr.io#nvidia/jax:25.04", "--container-mounts",
                      "/data:/data", "--chdir", "/nfs/r1v2", "--dry-run", "--", *TRAIN_ARGS)
    assert out.returncode == 0, out.stderr
    (srun,) = [line for line in sbatch_file(out.stdout).splitlines() if line.startswith("srun ")]
    assert "--container-image='nvcr.io#nvidia/jax:25.04' --container-workdir=/nfs/r1v2" in srun
    assert "--container-mounts=/data:/data" in srun


def test_submission_writes_the_dry_run_script_and_calls_sbatch(sandbox):
    args = ["--nodes", "2", "--partition", "gpu", "--", *TRAIN_ARGS]
    dry = sandbox.run("slurm_gpu.sh", "--dry-run", *args)
    result = sandbox.run("slurm_gpu.sh", *args, FAKE_SBATCH_RC="0", FAKE_SBATCH_STDOUT="Submitted batch job 42\n")
    assert result.returncode == 0, result.stderr
    (call,) = sandbox.calls()
    assert call[0] == "sbatch" and "Submitted batch job 42" in result.stdout
    with open(call[1]) as written:
        assert written.read() == sbatch_file(dry.stdout)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nodes", "0", "--", *TRAIN_ARGS], "--nodes must be a positive integer, got '0'"),
        (["--gpus-per-node", "x", "--", *TRAIN_ARGS], "--gpus-per-node must be a positive integer"),
        (["--process-per", "socket", "--", *TRAIN_ARGS], "--process-per must be 'node' or 'gpu'"),
        (["--time", "1h", "--", *TRAIN_ARGS], "--time '1h' is not a SLURM time"),
        (["--port", "80", "--", *TRAIN_ARGS], "--port must be in 1024..65535"),
        (["--partition", "gpu part", "--", *TRAIN_ARGS], "--partition 'gpu part' contains characters"),
        (["--env", "A-B=1", "--", *TRAIN_ARGS], "--env expects KEY=VALUE"),
        (["--container-mounts", "/a:/a", "--", *TRAIN_ARGS], "--container-mounts needs --container-image"),
        (["--sbatch-opt", "exclusive", "--", *TRAIN_ARGS], "--sbatch-opt expects one sbatch option"),
        (["--nodes"], "--nodes needs a value"),
        (["--bogus", "--", *TRAIN_ARGS], "unknown argument '--bogus'"),
        ([], "no r1v2 train arguments"),
        (["--", "--workdir", "/w"], "need --config"),
        (["--", "--config", "c.py"], "need --workdir"),
        (["--", *TRAIN_ARGS, "--process-id", "0"], "do not pass --process-id"),
        (["--", *TRAIN_ARGS, "--coordinator=h:1"], "do not pass --coordinator"),
    ],
)
def test_bad_arguments_fail_before_anything_runs(sandbox, args, message):
    result = sandbox.run("slurm_gpu.sh", "--dry-run", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("slurm_gpu.sh: error: ") and message in result.stderr
    assert result.stdout == "" and sandbox.calls() == []
