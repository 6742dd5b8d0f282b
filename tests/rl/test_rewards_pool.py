"""AnswerChecker's worker pool: the limits it applies, the exact reasons and messages it
gives, the workers it restarts, and the processes it leaves (none). Worker processes are
found as this process's new children (`multiprocessing.active_children`)."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from r1v2_jax.rl import rewards
from r1v2_jax.rl.answers import AnswerCheckConfig, InvalidGoldError, check_answer
from r1v2_jax.rl.rewards import AnswerChecker

R = "<think>\nr\n</think>\n"
HANG = R + "\\boxed{9^{9^{9^{9}}}}"  # math-verify's limit set far away: only a kill stops it
OK = [R + "\\boxed{2}", R + "\\boxed{3}"], ["2", "3"], ["number", "number"]
MATCH = [(True, "match")] * 2


def _new_children(before: set) -> list:
    return [p for p in mp.active_children() if p not in before]


def _records(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "r1v2_jax.rl.rewards"]


@pytest.fixture(scope="module")
def pool():
    """One worker, every limit away from its default (batch limit off)."""
    cfg = AnswerCheckConfig(num_workers=1, check_timeout_s=1.0, batch_timeout_s=None,
                            math_verify_timeout_s=60, worker_start_timeout_s=60.0,
                            worker_memory_limit_mb=3000)
    before = set(mp.active_children())
    with AnswerChecker(cfg) as c:
        c.check_batch([R + "1"], ["1"], ["number"])  # started
        yield c, before
    assert _new_children(before) == []  # close() stopped them all


def test_workers_run_under_the_configured_memory_limit(pool):
    (worker,) = _new_children(pool[1])
    if not os.path.exists(f"/proc/{worker.pid}/limits"):
        pytest.skip("needs Linux /proc")
    with open(f"/proc/{worker.pid}/limits") as f:
        line = next(l for l in f if l.startswith("Max address space"))
    assert line.split()[3:5] == [str(3000 * 2**20)] * 2  # soft and hard, bytes


def test_a_restarted_worker_takes_the_rest_of_the_batch(pool, caplog):
    c, before = pool
    (first,) = _new_children(before)
    got = c.check_batch([HANG] + OK[0], ["1"] + OK[1], ["math"] + OK[2])
    assert [(g.correct, g.reason) for g in got] == [(False, "timeout (hard limit 1.0 s)")] + MATCH
    (second,) = _new_children(before)  # the hanging worker is gone, not left running
    assert second is not first and not first.is_alive()
    assert _records(caplog) == ["answer check, sample 0: score 0, timeout (hard limit 1.0 s)"]


def test_a_worker_killed_from_outside_scores_worker_died(pool, caplog):
    c, before = pool
    (worker,) = _new_children(before)
    timer = threading.Timer(0.5, os.kill, (worker.pid, signal.SIGKILL))  # mid-check: HANG
    timer.start()
    got = c.check_batch([HANG] + OK[0], ["1"] + OK[1], ["math"] + OK[2])
    timer.join()
    assert [(g.correct, g.reason) for g in got] == [(False, "worker_died (exit code -9)")] + MATCH
    assert _records(caplog) == ["answer check, sample 0: score 0, worker_died (exit code -9)"]


def test_a_bad_gold_found_by_the_worker_names_its_sample(pool):
    with pytest.raises(InvalidGoldError) as direct:
        check_answer(R + "1", "seven", "number", AnswerCheckConfig())
    message = f"sample 1: {direct.value}"
    with pytest.raises(InvalidGoldError, match=f"^{re.escape(message)}$"):
        pool[0].check_batch([R + "1", R + "1"], ["1", "seven"], ["number", "number"])


def test_messages_of_bad_batches_before_any_worker_starts():
    before = set(mp.active_children())
    c = AnswerChecker(AnswerCheckConfig(num_workers=1))
    for n in ((2, 1, 2), (1, 1, 2), (1, 2, 1)):
        with pytest.raises(ValueError, match=f"^AnswerChecker.check_batch: {n[0]} responses, "
                                             f"{n[1]} golds, {n[2]} answer_types$"):
            c.check_batch(["x"] * n[0], ["1"] * n[1], ["number"] * n[2])
    with pytest.raises(ValueError, match=r"^sample 1: gold answer must be a non-empty string, got ' '$"):
        c.check_batch([R + "1", R + "1"], ["1", " "], ["number", "number"])
    assert _new_children(before) == []


def test_start_up_failures_have_exact_messages_and_leave_no_worker():
    before = set(mp.active_children())
    with AnswerChecker(AnswerCheckConfig(worker_memory_limit_mb=16)) as c:  # MemoryError: exit 1
        with pytest.raises(RuntimeError, match=r"^AnswerChecker: worker died on start-up \(exit code 1\)$"):
            c.check_batch([R + "1"], ["1"], ["number"])
    # a worker needs ~0.5 s to import sympy: 0.01 s passes first; raised then, not later
    with AnswerChecker(AnswerCheckConfig(worker_start_timeout_s=0.01)) as c:
        start = time.monotonic()
        with pytest.raises(RuntimeError, match=r"^AnswerChecker: worker not ready after 0\.01 s$"):
            c.check_batch([R + "1"], ["1"], ["number"])
        assert time.monotonic() - start < 0.9  # the worker may not be waited for (1 s+)
        assert _new_children(before) == []


def test_a_restarting_worker_is_held_to_its_start_deadline():
    # started with a generous deadline; the worker restarted after the hard-limit kill gets
    # 0.01 s, so the batch must stop there rather than wait for it
    with AnswerChecker(AnswerCheckConfig(check_timeout_s=0.5, math_verify_timeout_s=60)) as c:
        c.check_batch([R + "1"], ["1"], ["number"])
        c.config = dataclasses.replace(c.config, worker_start_timeout_s=0.01)
        with pytest.raises(RuntimeError, match=r"^AnswerChecker: worker not ready after 0\.01 s$"):
            c.check_batch([HANG, R + "1"], ["1", "1"], ["math", "number"])


def test_the_batch_clock_starts_once_the_workers_are_ready(monkeypatch):
    # start-up (~0.5 s per worker, more under load) is longer than this batch limit, which
    # must not count it; the start deadline only concerns workers still starting: with the
    # checker's clock moved past it, a batch on the ready workers still runs
    before = set(mp.active_children())
    cfg = AnswerCheckConfig(num_workers=2, batch_timeout_s=0.3, worker_start_timeout_s=30.0)
    with AnswerChecker(cfg) as c:
        got = c.check_batch(*OK)
        assert [(g.correct, g.reason) for g in got] == MATCH
        assert len(_new_children(before)) == 2
        later = types.SimpleNamespace(monotonic=lambda: time.monotonic() + 1000.0)
        monkeypatch.setattr(rewards, "time", later)
        assert [(g.correct, g.reason) for g in c.check_batch(*OK)] == MATCH
    assert _new_children(before) == []


def test_an_unclosed_checker_does_not_keep_the_interpreter_alive():
    # workers are daemons: a script that never calls close() still exits (a non-daemon
    # worker would be joined at exit while it waits for work: a hang)
    code = ("from r1v2_jax.rl.answers import AnswerCheckConfig\n"
            "from r1v2_jax.rl.rewards import AnswerChecker\n"
            "c = AnswerChecker(AnswerCheckConfig(num_workers=1))\n"
            "print(c.check_batch(['</think>1'], ['1'], ['number'])[0].reason)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (0, "match\n"), proc.stderr[-2000:]


def test_a_batch_limit_reached_with_every_check_running(caplog):
    caplog.set_level(logging.WARNING)
    cfg = AnswerCheckConfig(num_workers=2, check_timeout_s=30.0, batch_timeout_s=1.0,
                            math_verify_timeout_s=60)
    with AnswerChecker(cfg) as c:
        c.check_batch([R + "1"], ["1"], ["number"])  # started before the clock
        got = c.check_batch([HANG, HANG], ["1", "2"], ["math", "math"])
    reason = "timeout (batch limit 1.0 s)"
    assert [(g.correct, g.reason) for g in got] == [(False, reason)] * 2
    assert _records(caplog) == [
        "answer check: batch limit of 1.0 s reached, 2 of 2 checks unfinished scored 0",
        f"answer check, sample 0: score 0, {reason}", f"answer check, sample 1: score 0, {reason}"]


def test_hard_limits_with_one_worker_gone_and_another_busy(caplog):
    # 2 workers: sample 0 is quick, so its worker also takes sample 2; the hard limit kills
    # sample 1's worker while sample 2's still runs and nothing is pending (that slot stays
    # empty); each kill comes at its 0.4 s limit, not a second later
    cfg = AnswerCheckConfig(num_workers=2, check_timeout_s=0.4, batch_timeout_s=None,
                            math_verify_timeout_s=60)
    with AnswerChecker(cfg) as c:
        c.check_batch([R + "1"], ["1"], ["number"])  # started
        start = time.monotonic()
        got = c.check_batch([R + "\\boxed{2}", HANG, HANG], ["2", "1", "1"], ["number", "math", "math"])
        elapsed = time.monotonic() - start
    reason = "timeout (hard limit 0.4 s)"
    assert [(g.correct, g.reason) for g in got] == [(True, "match"), (False, reason), (False, reason)]
    assert elapsed < 0.9, elapsed
