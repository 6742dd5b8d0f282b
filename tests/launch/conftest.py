"""Fixtures for the launch-script tests: fake cluster commands on PATH and a script runner."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCH = REPO_ROOT / "launch"

# Records its argv as one JSON line in $FAKE_CALLS, then behaves as FAKE_<NAME>_* say.
_RECORDER = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["FAKE_CALLS"], "a") as calls:
    calls.write(json.dumps([name] + sys.argv[1:]) + "\\n")
key = "FAKE_" + name.upper()
if sys.argv[1:2] == ["compute"] and "describe" in sys.argv:
    key += "_DESCRIBE"
sys.stdout.write(os.environ.get(key + "_STDOUT", ""))
sys.exit(int(os.environ.get(key + "_RC", "97")))
"""


@dataclass(frozen=True)
class Command:
    """One `+ ` line of a dry run: argv, and the local log file when piped to tee."""

    argv: list[str]
    log: str | None


def parse_commands(stdout: str) -> list[Command]:
    """The `+ ` lines of a script's output, split back into words as bash would."""
    commands = []
    for line in stdout.splitlines():
        if not line.startswith("+ "):
            continue
        words = shlex.split(line[2:])
        log = None
        if "|" in words:
            cut = words.index("|")
            assert words[cut - 1] == "2>&1" and words[cut + 1 : cut + 3] == ["tee", "-a"], line
            words, log = words[: cut - 1], words[cut + 3]
        commands.append(Command(words, log))
    return commands


@dataclass
class Sandbox:
    """A temporary cwd and a bin/ folder put first on PATH, holding recording fakes."""

    root: Path
    bin: Path
    calls_file: Path

    def fake(self, name: str) -> None:
        path = self.bin / name
        path.write_text(_RECORDER.format(python=sys.executable))
        path.chmod(0o755)

    def script(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(body)
        path.chmod(0o755)

    repo_root = REPO_ROOT

    @staticmethod
    def commands(stdout: str) -> list[Command]:
        return parse_commands(stdout)

    def calls(self) -> list[list[str]]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines()]

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("R1V2_", "SLURM_", "FAKE_")) and k != "VIRTUAL_ENV"}
        # a developer's activated venv must not lend the scripts a real `r1v2`
        path = [d for d in env["PATH"].split(os.pathsep)
                if d and not os.path.exists(os.path.join(d, "r1v2"))]
        env["PATH"] = os.pathsep.join([str(self.bin), *path])
        env["FAKE_CALLS"] = str(self.calls_file)
        env["TMPDIR"] = str(self.root)
        env.update(extra)
        return env

    def run(self, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(LAUNCH / script), *args],
            cwd=self.root, env=self.env(**env), capture_output=True, text=True, timeout=60,
        )


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    """Every cluster command is a fake that records the call and fails (exit 97)."""
    box = Sandbox(tmp_path, tmp_path / "bin", tmp_path / "calls.jsonl")
    box.bin.mkdir()
    for name in ("gcloud", "git", "sbatch", "srun", "scontrol", "ssh", "scp"):
        box.fake(name)
    return box
