"""All launch scripts: bash syntax, --help, and the shared quoting helper of common.sh.

Script-specific behaviour: test_tpu_pod.py and test_slurm_gpu.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
SCRIPTS = ["common.sh", "tpu_pod.sh", "slurm_gpu.sh"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_bash_syntax(name):
    result = subprocess.run(["bash", "-n", str(LAUNCH / name)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["tpu_pod.sh", "slurm_gpu.sh"])
def test_help_runs_nothing_and_documents_dry_run(sandbox, name):
    result = sandbox.run(name, "--help")
    assert result.returncode == 0 and result.stdout.startswith(f"Usage: launch/{name}")
    assert "--dry-run" in result.stdout and sandbox.calls() == []


@pytest.mark.parametrize("name", ["tpu_pod.sh", "slurm_gpu.sh"])
def test_scripts_are_executable_and_strict(name):
    path = LAUNCH / name
    assert path.stat().st_mode & 0o111
    assert "\nset -euo pipefail\n" in path.read_text()


WORDS = ["plain", "with space", "it's", "", "$HOME", 'a"b', "semi;colon", "new\nline", "*.py", "--k=v"]


def test_shell_join_round_trips_through_bash():
    # bash prints each word between brackets; eval of the joined line must give them back.
    program = f'source {LAUNCH / "common.sh"}; eval "printf \'[%s]\' $(shell_join "$@")"'
    result = subprocess.run(["bash", "-c", program, "test", *WORDS], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(f"[{word}]" for word in WORDS)


def test_shell_join_leaves_safe_words_bare():
    program = f'source {LAUNCH / "common.sh"}; shell_join "$@"'
    args = ["gcloud", "--zone=us-east5-a", "gs://b/run", "with space"]
    result = subprocess.run(["bash", "-c", program, "test", *args], capture_output=True, text=True, timeout=60)
    assert result.stdout == "gcloud --zone=us-east5-a gs://b/run 'with space'"
