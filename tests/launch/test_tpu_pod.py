"""launch/tpu_pod.sh: dry-run output, argument checks, and the real code paths run against
a recording fake `gcloud` / `git` (nothing reaches Google Cloud)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

POD = ["--name", "r1v2-pod", "--zone", "us-east5-a"]
TRAIN_ARGS = [
    "--config", "configs/mpo_38b.py", "--workdir", "gs://bucket/runs/mpo",
    "--config.run_name=it's a \"quoted\" $HOME name",
]
TPU = ["gcloud", "compute", "tpus", "tpu-vm"]


def remote_command(argv: list[str]) -> str:
    return argv[argv.index("--command") + 1]


def test_dry_run_full_lifecycle_prints_every_command_and_runs_none(sandbox):
    out = []
    for command, extra in [("up", []), ("train", ["--", *TRAIN_ARGS]), ("logs", []), ("delete", [])]:
        result = sandbox.run("tpu_pod.sh", *POD, "--dry-run", command, *extra)
        assert result.returncode == 0, result.stderr
        out += sandbox.commands(result.stdout)
    assert sandbox.calls() == []  # every fake fails the script if it is called

    describe, create, archive, scp, install, train, logs, delete = out
    zone = "--zone=us-east5-a"
    assert describe.argv[:6] == [*TPU, "describe", "r1v2-pod"] and zone in describe.argv
    assert create.argv == [*TPU, "create", "r1v2-pod", zone, "--accelerator-type=v5p-128", "--version=v2-alpha-tpuv5"]
    assert archive.argv[0:2] == ["git", "-C"] and archive.argv[3] == "archive" and archive.argv[-1] == "HEAD"
    tarball = next(a for a in archive.argv if a.startswith("--output=")).removeprefix("--output=")
    assert scp.argv == [*TPU, "scp", tarball, "r1v2-pod:r1v2-src.tar.gz", zone, "--worker=all"]
    assert install.argv[:6] == [*TPU, "ssh", "r1v2-pod"] and "--worker=all" in install.argv
    assert "tar -xzf ~/r1v2-src.tar.gz -C ~/r1v2" in remote_command(install.argv)
    assert '"$HOME/r1v2[tpu]"' in remote_command(install.argv)

    assert train.argv[:5] == [*TPU, "ssh"] and "--worker=all" in train.argv
    prefix, train_words = remote_command(train.argv).split(" && r1v2 train ")
    assert prefix == "cd ~/r1v2 && . ~/r1v2-venv/bin/activate"
    assert shlex.split(train_words) == TRAIN_ARGS  # quoting survives the trip
    assert "--worker=0" in logs.argv and remote_command(logs.argv) == "tail -n +1 -F ~/r1v2-logs/train.log"
    for logged in (install, train, logs):
        assert logged.log.startswith("runs/launch-logs/r1v2-pod/") and logged.log.endswith(".log")
    assert delete.argv == [*TPU, "delete", "r1v2-pod", zone, "--quiet"]
    assert not (sandbox.root / "runs").exists()  # a dry run writes no log either


@pytest.mark.parametrize(
    "options, version, capacity",
    [
        (["--accelerator-type", "v4-32"], "tpu-ubuntu2204-base", None),
        (["--accelerator-type=v5litepod-16", "--spot"], "v2-alpha-tpuv5-lite", "--spot"),
        (["--accelerator-type", "v6e-64", "--reserved"], "v2-alpha-tpuv6e", "--reserved"),
        (["--accelerator-type", "v5p-8", "--version", "custom-rt"], "custom-rt", None),
    ],
)
def test_create_picks_runtime_version_and_capacity(sandbox, options, version, capacity):
    result = sandbox.run("tpu_pod.sh", *POD, *options, "--project", "my-proj", "--dry-run", "create")
    assert result.returncode == 0, result.stderr
    create = sandbox.commands(result.stdout)[-1].argv
    assert f"--version={version}" in create and "--project=my-proj" in create
    assert ("--spot" in create, "--reserved" in create) == (capacity == "--spot", capacity == "--reserved")


def test_env_vars_configure_the_pod(sandbox):
    env = dict(R1V2_TPU_NAME="from-env", R1V2_TPU_ZONE="europe-west4-b", R1V2_TPU_TYPE="v5p-256")
    result = sandbox.run("tpu_pod.sh", "--dry-run", "create", **env)
    assert result.returncode == 0, result.stderr
    create = sandbox.commands(result.stdout)[-1].argv
    assert create[4:7] == ["create", "from-env", "--zone=europe-west4-b"] and "--accelerator-type=v5p-256" in create


@pytest.mark.parametrize(
    "args, message",
    [
        (["--zone", "z", "create"], "--name is required"),
        (["--name", "pod", "create"], "--zone is required"),
        (["--name", "Bad_Name", "--zone", "z", "create"], "not a valid TPU name"),
        ([*POD, "--accelerator-type", "v5p", "create"], "GENERATION-CORES"),
        ([*POD, "--accelerator-type", "v9z-8", "create"], "no default runtime version"),
        ([*POD, "launch"], "unknown command 'launch'"),
        ([*POD], "no command given"),
        ([*POD, "--bogus", "create"], "unknown option '--bogus'"),
        ([*POD, "create", "delete"], "unexpected argument 'delete'"),
        ([*POD, "--spot", "--reserved", "create"], "exclude each other"),
        (["--name", "pod", "create", "--zone"], "--zone needs a value"),
        ([*POD, "--env", "1X=2", "train", "--", "--workdir", "gs://b"], "--env expects KEY=VALUE"),
        ([*POD, "train"], "train needs the r1v2 train arguments"),
        ([*POD, "train", "--", "--config", "c.py"], "need --workdir"),
        ([*POD, "train", "--", "--workdir", "/tmp/run"], "is not gs://"),
        ([*POD, "--detach", "create"], "--detach only applies to train"),
        ([*POD, "--remote-dir", "..", "install"], "--remote-dir '..' must be a single"),
        ([*POD, "--remote-dir", "a/b", "install"], "--remote-dir 'a/b' must be a single"),
        ([*POD, "--worker", "all", "logs"], "--worker must be a worker index"),
        ([*POD, "run"], "run needs a command"),
        ([*POD, "delete", "--", "x"], "takes no arguments"),
    ],
)
def test_bad_arguments_fail_before_anything_runs(sandbox, args, message):
    result = sandbox.run("tpu_pod.sh", "--dry-run", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("tpu_pod.sh: error: ") and message in result.stderr
    assert result.stdout == "" and sandbox.calls() == []


def test_local_workdir_is_accepted_when_allowed(sandbox):
    args = [*POD, "--allow-local-workdir", "--dry-run", "train", "--", "--workdir=runs/pod-run"]
    result = sandbox.run("tpu_pod.sh", *args)
    assert result.returncode == 0, result.stderr
    assert remote_command(sandbox.commands(result.stdout)[0].argv).endswith("r1v2 train --workdir=runs/pod-run")


@pytest.mark.parametrize(
    "describe_rc, describe_out, expect_rc, expect",
    [
        ("1", "", 0, "create"),
        ("0", "v5p-128\tREADY\n", 0, "reusing TPU r1v2-pod (v5p-128, READY)"),
        ("0", "v4-32\tREADY\n", 2, "already exists with accelerator type 'v4-32'"),
        ("0", "v5p-128\tPREEMPTED\n", 2, "is PREEMPTED"),
    ],
)
def test_create_reuses_an_existing_pod(sandbox, describe_rc, describe_out, expect_rc, expect):
    result = sandbox.run(
        "tpu_pod.sh", *POD, "create",
        FAKE_GCLOUD_DESCRIBE_RC=describe_rc, FAKE_GCLOUD_DESCRIBE_STDOUT=describe_out, FAKE_GCLOUD_RC="0",
    )
    assert result.returncode == expect_rc, result.stderr
    verbs = [call[4] for call in sandbox.calls()]
    if expect == "create":
        assert verbs == ["describe", "create"]
    else:
        assert verbs == ["describe"] and expect in result.stdout + result.stderr


def test_install_checks_the_git_ref_then_ships_it(sandbox):
    result = sandbox.run("tpu_pod.sh", *POD, "--ref", "v1.0", "install", FAKE_GIT_RC="0", FAKE_GCLOUD_RC="0")
    assert result.returncode == 0, result.stderr
    calls = sandbox.calls()
    assert [c[0] for c in calls] == ["git", "git", "gcloud", "gcloud"]
    assert calls[0][3:] == ["rev-parse", "--verify", "--quiet", "v1.0^{commit}"]
    assert calls[1][3] == "archive" and calls[1][-1] == "v1.0"
    assert calls[2][4] == "scp" and calls[3][4] == "ssh"

    bad = sandbox.run("tpu_pod.sh", *POD, "--ref", "nope", "install", FAKE_GIT_RC="128", FAKE_GCLOUD_RC="0")
    assert bad.returncode == 2 and "git ref 'nope' is not a commit" in bad.stderr
    assert [c[0] for c in sandbox.calls()] == ["git", "git", "gcloud", "gcloud", "git"]


@pytest.mark.parametrize("rc", ["0", "3"])
def test_train_output_goes_to_stdout_and_a_local_log(sandbox, rc):
    lines = "worker 0: step 1 loss 0.693\nworker 1: step 1 loss 0.693\n"
    result = sandbox.run(
        "tpu_pod.sh", *POD, "--log-dir", "logs", "train", "--", "--workdir", "gs://b/run",
        FAKE_GCLOUD_STDOUT=lines, FAKE_GCLOUD_RC=rc,
    )
    assert result.returncode == int(rc)  # pipefail: a failing run is not hidden by tee
    (log,) = (sandbox.root / "logs" / "r1v2-pod").glob("*-train.log")
    assert log.read_text() == lines and lines in result.stdout


def _fake_worker_home(root: Path, r1v2_body: str) -> Path:
    """A worker's home: ~/r1v2 code folder and a ~/r1v2-venv whose bin holds a fake r1v2."""
    home = root / "home"
    (home / "r1v2").mkdir(parents=True)
    venv_bin = home / "r1v2-venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "activate").write_text('PATH="$HOME/r1v2-venv/bin:$PATH"\n')
    (venv_bin / "r1v2").write_text(r1v2_body)
    (venv_bin / "r1v2").chmod(0o755)
    return home


def test_remote_train_command_runs_r1v2_with_exact_arguments(sandbox):
    record = f'#!/bin/bash\n{sys.executable} -c "import json,os,sys; print(json.dumps([os.getcwd(), os.environ[\'XLA_FLAGS\'], sys.argv[1:]]))" "$@"\n'
    home = _fake_worker_home(sandbox.root, record)
    flags = "--xla_dump_to=/tmp/x --foo='bar baz'"
    result = sandbox.run("tpu_pod.sh", *POD, "--env", f"XLA_FLAGS={flags}", "--dry-run", "train", "--", *TRAIN_ARGS)
    command = remote_command(sandbox.commands(result.stdout)[0].argv)
    worker = subprocess.run(["bash", "-c", command], env={"HOME": str(home), "PATH": os.environ["PATH"]},
                            capture_output=True, text=True, timeout=60)
    assert worker.returncode == 0, worker.stderr
    assert json.loads(worker.stdout) == [str(home / "r1v2"), flags, ["train", *TRAIN_ARGS]]


def test_detached_run_writes_log_and_pid_and_kill_stops_it(sandbox):
    home = _fake_worker_home(sandbox.root, '#!/bin/bash\necho "started $*"\nexec sleep 120\n')
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    out = sandbox.run("tpu_pod.sh", *POD, "--detach", "--run-name", "mpo", "--dry-run", "train", "--", *TRAIN_ARGS)
    start = remote_command(sandbox.commands(out.stdout)[0].argv)
    out = sandbox.run("tpu_pod.sh", *POD, "--run-name", "mpo", "--dry-run", "kill")
    stop = remote_command(sandbox.commands(out.stdout)[0].argv)

    subprocess.run(["bash", "-c", start], env=env, check=True, timeout=60)
    pid_file, log_file = home / "r1v2-logs" / "mpo.pid", home / "r1v2-logs" / "mpo.log"
    pid = int(pid_file.read_text())
    try:
        for _ in range(200):  # wait for the fake run to write its first line
            if log_file.exists() and log_file.read_text():
                break
            time.sleep(0.05)
        assert os.getpgid(pid) == pid  # setsid: its own process group, killed as a whole
        assert log_file.read_text() == f"started train {' '.join(TRAIN_ARGS)}\n"
        subprocess.run(["bash", "-c", stop], env=env, check=True, timeout=60)
        assert not pid_file.exists()
        for _ in range(200):
            if not _alive(pid):
                break
            time.sleep(0.05)
        assert not _alive(pid)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running and not a zombie (an orphan may wait for reaping by init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
