"""Running the real `r1v2` command in a subprocess, optionally with a fault injected first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
# the console script's own entry point; `inject` runs first (a patched os call, a limit)
_LAUNCH = "import sys\n{inject}\nfrom r1v2_jax.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def cli_argv(args, inject: str = "") -> list[str]:
    return [sys.executable, "-c", _LAUNCH.format(inject=inject), *map(str, args)]


def run_cli(args, *, inject: str = "", timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(args, inject), env=ENV, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, **kwargs)


def start_cli(args, *, inject: str = "") -> subprocess.Popen:
    return subprocess.Popen(cli_argv(args, inject), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def assert_user_error(result: subprocess.CompletedProcess, command: str, *fragments: str) -> None:
    """Exit status 2, `r1v2 <command>: error: ...` naming every fragment, no traceback."""
    err = result.stderr
    assert result.returncode == 2, (result.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    assert f"r1v2 {command}: error:" in err, err[-3000:]
    for fragment in fragments:
        assert fragment in err, (fragment, err[-3000:])
