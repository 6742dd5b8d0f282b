"""`make mutants`: mutation testing (mutmut 2) of the core modules, each against its own tests.

    python tests/mutation/run.py [--again [--ids=N,N...] | --report] [GROUP ...]
                                                                   (default: every group)

mutmut 2 writes each mutant into the source file, so everything happens in a copy of the
working tree (MUTANTS_DIR, default /tmp/r1v2-mutants-$USER, recreated each run): the
repository itself is never written.  Each group runs `mutmut run` on its module(s) with only
the tests that cover them (`pytest -x`), so a run stays affordable; a group with `lines`
mutates only the lines those functions return (the GRPO trainer's reward/advantage assembly).
Results: MUTANTS_DIR/results.md, a table per group and the diff of every survivor; record
the table and each survivor's verdict (killed later / equivalent, and why) in docs/testing.md.
`--again` keeps the previous copy and its mutmut cache, refreshes the files from the working
tree and runs again: killed mutants stay killed, the others are tested against the current
tests (how a survivor is shown killed by a test written after the first run); `--ids` runs
only those mutant ids of the group (`mutmut run ID`, e.g. the survivors a new test is for,
not the ones argued equivalent).  `--report` only prints the table and survivors of the
named groups from MUTANTS_DIR's cache.
Not part of CI: several minutes per group on a laptop.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
MUTMUT = str(Path(PY).parent / "mutmut")


def _block(root: Path, path: str, first: str, last: str) -> set[int]:
    """Line numbers from the first line matching regex `first` to the next matching `last`."""
    lines = (root / path).read_text().splitlines()
    start = next((i for i, l in enumerate(lines) if re.search(first, l)), None)
    end = next((i for i in range(start or 0, len(lines)) if re.search(last, lines[i])), None)
    if start is None or end is None:
        raise SystemExit(f"mutants: {path}: no block from /{first}/ to /{last}/; update GROUPS")
    return set(range(start + 1, end + 2))


def _blocks(spec: dict[str, list[tuple[str, str]]]):
    """A line selector: {path: [(first, last), ...]} -> the union of those blocks per file."""
    def select(root: Path) -> dict[str, set[int]]:
        return {path: set().union(*(_block(root, path, a, b) for a, b in pairs))
                for path, pairs in spec.items()}
    return select


_trainer_lines = _blocks({"r1v2_jax/rl/grpo_trainer.py": [(r"fresh = \[", r"s\.advantage = ")],
                          "r1v2_jax/rl/rollout.py": [(r"flat = \[", r"s\.hallucinated = ")]})
# rewards: the formulas (r_format, r_theta~, the hybrid sum, the RM advantage options);
# rewards_pool: the AnswerChecker worker pool (process management, slow tests)
_REWARDS = "r1v2_jax/rl/rewards.py"
_reward_formulas = _blocks({_REWARDS: [(r"^def format_reward", r"return 1\.0 if text\.split"),
                                       (r"^class RewardModelScorer", r"return \(a_rule \+ a_rm\)")]})
_reward_pool = _blocks({_REWARDS: [(r"^def _worker_main", r"self\.close\(\)$")]})
# RoPE + the attention module of Qwen2, and the attention backends that run on CPU: the
# mask, the plain path, the causal blocks (forward and hand-written backward) and the
# dispatch (the cuDNN / splash bodies need a GPU / TPU; only their dispatch is mutated)
_rope_attention = _blocks({
    "r1v2_jax/models/qwen2.py": [(r"^def apply_rope", r"return out, cache_k, cache_v")],
    "r1v2_jax/models/attention.py": [(r"^_NEG_INF", r"^_causal_blocks\.defvjp"),
                                     (r"^def attention\(", r"raise ValueError")]})


# grpo_loss: the whole parity + property suite of the two files takes ~4 min; this
# selection (~1 min) keeps the fast hand-computed files first and one parity case per
# (policy loss, IS level) and per (clip, KL) option, every aggregation among them
_L = "tests/losses/"
_GRPO_LOSS_TESTS = [
    _L + "test_grpo_loss_errors.py", _L + "test_grpo_loss_defaults.py",
    _L + "test_grpo_loss_edges.py", _L + "test_grpo_loss_wiring.py",
    *(_L + "test_grpo_loss_properties.py::" + t for t in (
        "test_hand_computed_positive_and_negative_advantage",
        "test_hand_computed_aggregations_and_kl",
        "test_masked_tokens_get_zero_gradient_even_with_garbage")),
    *(_L + "test_policy_loss_properties.py::" + t for t in (
        "test_gspo_equals_grpo_when_every_sequence_has_length_one",
        "test_cispo_gradient_never_vanishes_for_clipped_tokens",
        "test_unknown_names_and_bad_combinations_raise")),
    *(_L + f"test_grpo_loss_parity.py::test_matches_trl[{c}]" for c in (
        "k3_bias_corrected-dual_clip-grpo", "k3_bias_corrected-dual_clip-bnpo",
        "k3_bias_corrected-dual_clip-dr_grpo", "k3_bias_corrected-dual_clip-dapo",
        "k1-clip_higher-grpo", "k2-clip_higher-bnpo", "no_kl-symmetric-dr_grpo")),
    *(_L + "test_grpo_loss_parity.py::" + t for t in (
        "test_dual_clip_equals_trl_delta_when_above_one_plus_eps_high",
        "test_importance_weights_scale_policy_term_only",
        "test_on_policy_old_none_matches_trl_detached_old",
        "test_dapo_num_items_in_batch_matches_trl")),
    *(_L + f"test_policy_loss_parity.py::test_matches_reference[{c}]" for c in (
        "grpo-token-grpo-k3", "grpo-sequence-bnpo-no_kl", "grpo-sequence_token-dapo-k3",
        "cispo-token-dr_grpo-k3", "cispo-sequence-grpo-no_kl", "cispo-sequence_token-bnpo-k3",
        "sapo-token-dapo-no_kl", "sapo-sequence-dr_grpo-k3", "sapo-sequence_token-grpo-k3",
        "gmpo-token-bnpo-k3", "clip_cov-token-dapo-k3", "kl_cov-token-dr_grpo-k3")),
    _L + "test_policy_loss_parity.py::test_entropy_bonus_and_high_entropy_mask_match_verl_and_trl[grpo]",
]

# name: (modules, pytest arguments, line selector or None)
GROUPS = {
    "batching": (["r1v2_jax/rl/batching.py", "r1v2_jax/train/packing.py"],
                 ["tests/rl/test_batching.py"], None),
    "ssb": (["r1v2_jax/rl/ssb.py"], ["tests/rl/test_ssb.py", "tests/rl/test_ssb_config.py",
                                     "tests/rl/test_ssb_codec.py", "tests/rl/test_ssb_edges.py"],
            None),
    "answers": (["r1v2_jax/rl/answers.py"],
                ["tests/rl/test_answer_region.py", "tests/rl/test_answers_config.py",
                 "tests/rl/test_rewards.py", "-k",
                 "answer or extraction or bad_reference or soft_timeout or think"], None),
    "advantages": (["r1v2_jax/losses/advantages.py"],
                   ["tests/losses/test_group_advantages.py",
                    "tests/losses/test_group_advantages_errors.py",
                    "tests/losses/test_advantage_wrappers.py"], None),
    "grpo_assembly": (["r1v2_jax/rl/grpo_trainer.py", "r1v2_jax/rl/rollout.py"],
                      ["tests/rl/test_grpo_advantage_wiring.py"], _trainer_lines),
    "rewards": ([_REWARDS], ["tests/rl/test_reward_formulas.py",
                             "tests/rl/test_rewards.py::test_format_reward",
                             "tests/rl/test_rewards.py::test_calibration",
                             "tests/rl/test_rewards.py::test_rm_term_hand_computed",
                             "tests/rl/test_rewards.py::test_compute_rewards_hand_computed",
                             "tests/rl/test_rewards.py::test_reward_model_bad_output_is_an_error",
                             "tests/rl/test_reward_options.py", "-k", "not trainer"],
                _reward_formulas),
    "rewards_pool": ([_REWARDS], ["tests/rl/test_rewards_pool.py", "tests/rl/test_rewards.py", "-k",
                                  "pool or checker or timeout or limit or raises or compute_rewards"],
                     _reward_pool),
    "rope_attention": (["r1v2_jax/models/qwen2.py", "r1v2_jax/models/attention.py"],
                       ["tests/models/test_rope.py", "tests/models/test_attention.py"],
                       _rope_attention),
    "adapter": (["r1v2_jax/models/adapter.py"], ["tests/models/test_adapter.py"], None),
    "sampling": (["r1v2_jax/generate/sampling.py"], ["tests/generate/test_sampling_edges.py",
                                                     "tests/generate/test_sampling.py"], None),
    "logprobs": (["r1v2_jax/losses/logprobs.py"], ["tests/losses/test_token_logprobs_edges.py",
                                                      "tests/losses/test_token_logprobs.py"], None),
    # policy_losses.py first: mutmut goes file by file, so a partial run completes it
    "grpo_loss": (["r1v2_jax/losses/policy_losses.py", "r1v2_jax/losses/grpo.py"],
                  _GRPO_LOSS_TESTS, None),
    "preference": (["r1v2_jax/losses/preference.py", "r1v2_jax/losses/mpo.py"],
                   ["tests/losses/test_preference_edges.py",
                    "tests/losses/test_preference_losses.py"], None),
}
STATUS = {"ok_killed": "killed", "ok_suspicious": "killed", "bad_timeout": "timeout",
          "bad_survived": "survived", "untested": "untested", "skipped": "skipped"}


def copy_tree(dest: Path, fresh: bool = True) -> None:
    """The working tree as it is (tracked + untracked, not ignored) -> dest."""
    if fresh and dest.exists():
        shutil.rmtree(dest)
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for f in filter(None, (x.decode() for x in files)):
        if (REPO / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dest / f)


def run_group(name: str, dest: Path, log, ids: tuple[str, ...] = ()) -> float:
    modules, tests, selector = GROUPS[name]
    # mutmut 2 counts only exit code 1 as killed; a mutant that breaks the import (pytest's
    # exit code 2, e.g. a default that fails its own check at import time) counted as
    # survived: every failing exit code is a kill. pytest runs in the runner's own process
    # (no `sh -c` around it: mutmut's timeout kills only the process it started, and an
    # orphaned pytest kept mutmut's pty open, so it waited for EOF forever), and its output
    # goes to a file, so processes the tests spawn cannot hold the pty open either.
    args = ["-x", "-q", "-p", "no:cacheprovider", *tests]
    code = (f"import os, sys, pytest; fd = os.open({str(dest / (name + '.pytest.log'))!r}, "
            f"os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644); os.dup2(fd, 1); os.dup2(fd, 2); "
            f"sys.exit(0 if pytest.main({args!r}) == 0 else 1)")
    runner = shlex.join([PY, "-c", code])
    cmd = [MUTMUT, "run", "--paths-to-mutate", ",".join(modules),
           "--tests-dir", "tests", "--runner", runner, "--test-time-base", "60",
           "--simple-output", "--no-progress"]
    if selector is not None:  # mutate only the selected lines: a patch that "adds" them
        patch = dest / f"{name}.patch"
        text = ""
        for path, numbers in selector(dest).items():  # the copy's lines, not the repo's
            lines = (dest / path).read_text().splitlines()
            # one diff per file (mutmut keeps the last one per file), with its own header
            text += f"diff -u {path} {path}\n--- {path}\n+++ {path}\n"
            for n in sorted(numbers):
                text += f"@@ -{n - 1},0 +{n},1 @@\n+{lines[n - 1]}\n"
        patch.write_text(text)
        cmd += ["--use-patch-file", str(patch)]
    cache = dest / ".mutmut-cache"
    if cache.exists():  # mutmut caches one baseline time per tests hash, not per runner:
        with sqlite3.connect(cache) as db:  # each group times its own tests (its timeout)
            db.execute("DELETE FROM MiscData WHERE key IN ('baseline_time_elapsed', "
                       "'hash_of_tests')")
    t0 = time.time()
    log(f"[mutants] {name}: {' '.join(modules)} against {' '.join(tests)}")
    # XLA's persistent compilation cache: a mutant changes one function, so every other
    # program the tests compile is a cache hit (the grpo_loss selection: 45 s -> 19 s)
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(dest / ".jax-cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    for one in [[]] if not ids else [[i] for i in ids]:
        proc = subprocess.run(cmd + one, cwd=dest, capture_output=True, text=True, env=env)
        with open(dest / f"{name}.log", "w" if not one or one[0] == ids[0] else "a") as f:
            f.write(proc.stdout + proc.stderr)
        out = proc.stdout + proc.stderr
        if "don't run cleanly" in out or proc.returncode not in range(0, 64):
            log(f"[mutants] {name}: mutmut failed (rc {proc.returncode}); see {dest / name}.log")
    return time.time() - t0


def results(dest: Path, names: list[str], seconds: dict[str, float]) -> str:
    db = sqlite3.connect(dest / ".mutmut-cache")
    rows = db.execute("SELECT m.id, m.status, s.filename, l.line_number FROM Mutant m "
                      "JOIN Line l ON m.line = l.id JOIN SourceFile s ON l.sourcefile = s.id "
                      "ORDER BY s.filename, l.line_number, m.id").fetchall()
    out = ["| group | modules | mutants | killed | timeout | survived | untested | killed % | minutes |",
           "|---|---|---|---|---|---|---|---|---|"]
    survivors = []
    for name in names:
        modules, _, selector = GROUPS[name]
        chosen = selector(dest) if selector is not None else {}  # 1-based lines per file
        counts = {v: 0 for v in STATUS.values()}
        for mid, status, filename, line in rows:
            if filename in modules and (filename not in chosen or line + 1 in chosen[filename]):
                counts[STATUS.get(status, status)] += 1
                if STATUS.get(status) in ("survived", "timeout", "untested"):
                    survivors.append((name, mid, filename, line + 1, STATUS[status]))
        total = sum(counts.values())
        done = counts["killed"] + counts["timeout"] + counts["survived"]
        pct = f"{100 * (counts['killed'] + counts['timeout']) / done:.1f}" if done else "-"
        out.append(f"| {name} | {', '.join(modules)} | {total} | {counts['killed']} | "
                   f"{counts['timeout']} | {counts['survived']} | {counts['untested']} | {pct} | "
                   f"{seconds.get(name, 0) / 60:.1f} |")
    out += ["", "Survivors (timeouts count as killed):", ""]
    for name, mid, filename, line, status in survivors:
        if status == "untested":
            continue
        diff = subprocess.run([MUTMUT, "show", str(mid)], cwd=dest,
                              capture_output=True, text=True).stdout.strip()
        out += [f"### {name} #{mid} {filename}:{line} ({status})", "```diff", diff, "```", ""]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    again, report = "--again" in argv, "--report" in argv
    ids = tuple(i for a in argv if a.startswith("--ids=") for i in a[6:].split(",") if i)
    if ids and not again:
        raise SystemExit("mutants: --ids needs --again (ids of a previous run's cache)")
    names = [a for a in argv if a not in ("--again", "--report") and not a.startswith("--ids=")]
    names = names or list(GROUPS)
    if ids and len(names) != 1:
        raise SystemExit("mutants: --ids needs exactly one group")
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        raise SystemExit(f"mutants: unknown group(s) {unknown}; known: {list(GROUPS)}")
    dest = Path(os.environ.get("MUTANTS_DIR", f"/tmp/r1v2-mutants-{getpass.getuser()}"))
    if dest.resolve() == REPO or REPO in dest.resolve().parents:
        raise SystemExit(f"mutants: MUTANTS_DIR={dest} must be outside the repository")
    if (again or report) and not (dest / ".mutmut-cache").exists():
        raise SystemExit(f"mutants: --again / --report need a previous run in {dest}")
    if report:  # the table and survivors of earlier runs, nothing run
        print(results(dest, names, {}))
        return 0
    copy_tree(dest, fresh=not again)
    for stale in dest.glob("r1v2_jax/**/*.py.bak"):  # left by an interrupted mutmut run: with
        stale.unlink()  # it, mutmut 2's next run failed to record a status, then hung
    log = lambda s: print(s, flush=True)  # noqa: E731
    seconds = {}
    for name in names:
        seconds[name] = run_group(name, dest, log, ids)
        (dest / "results.md").write_text(results(dest, names[:names.index(name) + 1], seconds))
        log(f"[mutants] {name}: {seconds[name] / 60:.1f} min; table in {dest / 'results.md'}")
    print((dest / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
