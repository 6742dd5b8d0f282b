"""Hybrid reward of R1V2 eq. 7 with calibrated reward-model threshold, host side.

    r = w_acc * r_rule + w_rm * r_theta~ + w_fmt * r_format

r_rule   answer correctness in {0, 1} (`r1v2_jax.rl.answers`), checked in a pool of worker
         processes under hard wall-clock limits per check and per batch (`AnswerChecker`).
r_format 1 iff the response is `<think>...</think>` + a non-empty answer, each tag once.
r_theta~ reward-model score s, standardised with a calibration set's (mean, std), clipped
         to [-tau, tau], then (rm_gate="agree") kept only where it agrees with r_rule:
         z > 0 for a correct answer or z < 0 for a wrong one; otherwise 0.  Samples with no
         reference answer (gold None) keep z: the rule cannot disagree.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_any
from typing import Any, Protocol, runtime_checkable

import numpy as np

from r1v2_jax.rl.answers import AnswerCheck, AnswerCheckConfig, InvalidGoldError, check_answer, validate_gold

logger = logging.getLogger(__name__)
RM_GATES = ("none", "agree")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
PATHOLOGICAL = ("timeout", "worker_died", "error", "answer_too_long")  # reasons that are logged


# ----------------------------------------------------------------------------- r_format
def format_reward(response: str, think_opened_by_prompt: bool = False) -> float:
    """1.0 iff `<think>` (leading whitespace allowed) ... `</think>` then a non-empty answer,
    each tag exactly once; else 0.0.  With a QwQ-style prompt that already ends in
    `<think>\\n`, pass think_opened_by_prompt=True: the tag is then counted as present."""
    text = (THINK_OPEN if think_opened_by_prompt else "") + response
    if text.count(THINK_OPEN) != 1 or text.count(THINK_CLOSE) != 1:
        return 0.0
    if not text.lstrip().startswith(THINK_OPEN):
        return 0.0
    return 1.0 if text.split(THINK_CLOSE, 1)[1].strip() else 0.0


# ----------------------------------------------------------------------------- r_rule
def _worker_main(conn, cfg: AnswerCheckConfig) -> None:
    """Checking loop of one worker process: (response, gold, type) in, result out."""
    if cfg.worker_memory_limit_mb is not None:
        import resource

        limit = cfg.worker_memory_limit_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    check_answer(f"{THINK_CLOSE}\\boxed{{\\frac{{1}}{{2}}}}", "0.5", "math", cfg)  # warm sympy's caches
    conn.send("ready")
    while (msg := conn.recv()) is not None:
        try:
            conn.send(("ok", check_answer(*msg, cfg)))
        except InvalidGoldError as e:
            conn.send(("invalid_gold", str(e)))


@dataclass
class _Worker:
    process: Any
    conn: Any
    ready: bool = False  # sent "ready" (sympy imported and warmed)
    start_deadline: float = 0.0


class AnswerChecker:
    """Runs `check_answer` in a pool of `num_workers` persistent processes, in parallel,
    under two hard limits:

    - per check, `check_timeout_s`: an overrunning worker is killed (SIGKILL) and
      restarted; its sample scores 0 with reason "timeout (hard limit ...)";
    - per batch, `batch_timeout_s` (None: no limit): when it passes, the checks still
      running are killed and those not started are dropped; all score 0 with reason
      "timeout (batch limit ...)". So hostile answers cost at most the batch limit.

    Within the limits the scores are exactly `check_answer`'s. The batch clock starts once
    every worker is ready (start-up, ~seconds of sympy import, is not checking time);
    workers killed mid-batch restart in the background. Signal-based limits (math-verify's)
    cannot interrupt C code such as a huge integer power; a separate process can always be
    killed. Workers use the `start_method` context ("spawn": safe when the parent runs JAX
    threads). A worker that dies on start-up raises, so a broken checker never silently
    scores everything 0.
    """

    def __init__(self, config: AnswerCheckConfig = AnswerCheckConfig()):
        self.config = config
        self._ctx = mp.get_context(config.start_method)
        self._workers: list[_Worker | None] = [None] * config.num_workers

    def _spawn(self, w: int) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child, self.config), daemon=True)
        proc.start()
        child.close()
        self._workers[w] = _Worker(proc, parent, False,
                                   time.monotonic() + self.config.worker_start_timeout_s)

    def _on_ready(self, w: int) -> None:
        """The starting worker `w` has sent something: "ready", or it died (EOF)."""
        worker = self._workers[w]
        try:
            worker.conn.recv()  # "ready"
        except EOFError:
            worker.process.join()
            code = worker.process.exitcode
            self._kill(w)
            raise RuntimeError(f"AnswerChecker: worker died on start-up (exit code {code})") from None
        worker.ready = True

    def _check_start_deadlines(self, now: float) -> None:
        for w, worker in enumerate(self._workers):
            if worker is not None and not worker.ready and now >= worker.start_deadline:
                self._kill(w)
                raise RuntimeError(f"AnswerChecker: worker not ready after "
                                   f"{self.config.worker_start_timeout_s} s")

    def _start_all(self) -> None:
        """Every worker started and ready (in parallel), before a batch's clock starts."""
        for w, worker in enumerate(self._workers):
            if worker is None:
                self._spawn(w)
        while True:
            starting = {wk.conn: w for w, wk in enumerate(self._workers) if not wk.ready}
            if not starting:
                return
            now = time.monotonic()
            first = min(self._workers[w].start_deadline for w in starting.values())
            for conn in wait_any(list(starting), timeout=max(0.0, first - now)):
                self._on_ready(starting[conn])
            self._check_start_deadlines(time.monotonic())

    def _kill(self, w: int) -> None:
        worker = self._workers[w]
        self._workers[w] = None
        if worker is not None:
            worker.process.kill()
            worker.process.join()
            worker.conn.close()

    def check_batch(
        self, responses: Sequence[str], golds: Sequence[str | None], answer_types: Sequence[str | None]
    ) -> list[AnswerCheck]:
        """One AnswerCheck per response; gold None means "no reference" (score 0, not checked)."""
        if not len(responses) == len(golds) == len(answer_types):
            raise ValueError(f"AnswerChecker.check_batch: {len(responses)} responses, {len(golds)} golds, "
                             f"{len(answer_types)} answer_types")
        cfg = self.config
        results: list[AnswerCheck | None] = [None] * len(responses)
        pending = []
        for i, (gold, kind) in enumerate(zip(golds, answer_types)):
            if gold is None:
                results[i] = AnswerCheck(False, "no_reference")
            else:
                validate_gold(gold, kind, where=f"sample {i}: ")
                pending.append(i)
        pending.reverse()
        if pending:
            self._start_all()
        batch_deadline = math.inf if cfg.batch_timeout_s is None else time.monotonic() + cfg.batch_timeout_s
        busy: dict[int, tuple[int, float]] = {}  # worker -> (sample, deadline)
        try:
            while (pending or busy) and time.monotonic() < batch_deadline:
                for w, worker in enumerate(self._workers):
                    if worker is None and pending:  # killed by a timeout: restart in the background
                        self._spawn(w)
                    elif worker is not None and worker.ready and w not in busy and pending:
                        i = pending.pop()
                        worker.conn.send((responses[i], golds[i], answer_types[i]))
                        busy[w] = (i, time.monotonic() + cfg.check_timeout_s)
                watched = {wk.conn: w for w, wk in enumerate(self._workers)
                           if wk is not None and (w in busy or not wk.ready)}
                deadlines = [d for _, d in busy.values()] + [batch_deadline] + [
                    wk.start_deadline for wk in self._workers if wk is not None and not wk.ready]
                ready = wait_any(list(watched), timeout=max(0.0, min(deadlines) - time.monotonic()))
                for conn in ready:
                    w = watched[conn]
                    if w not in busy:
                        self._on_ready(w)
                        continue
                    i, _ = busy.pop(w)
                    try:
                        status, payload = conn.recv()
                    except EOFError:  # killed from outside or by the memory limit
                        code = self._workers[w].process.exitcode
                        self._kill(w)
                        results[i] = AnswerCheck(False, f"worker_died (exit code {code})")
                        continue
                    if status == "invalid_gold":
                        raise InvalidGoldError(f"sample {i}: {payload}")
                    results[i] = payload
                now = time.monotonic()
                for w, (i, deadline) in list(busy.items()):
                    if now >= deadline:
                        self._kill(w)
                        del busy[w]
                        results[i] = AnswerCheck(False, f"timeout (hard limit {cfg.check_timeout_s} s)")
                self._check_start_deadlines(now)
        except BaseException:  # a worker still busy would answer the next batch: stop it
            for w in busy:
                self._kill(w)
            raise
        if pending or busy:  # the batch limit passed: what is unfinished scores 0
            for w, (i, _) in busy.items():
                self._kill(w)
                results[i] = AnswerCheck(False, f"timeout (batch limit {cfg.batch_timeout_s} s)")
            for i in pending:
                results[i] = AnswerCheck(False, f"timeout (batch limit {cfg.batch_timeout_s} s)")
            logger.warning("answer check: batch limit of %s s reached, %d of %d checks unfinished "
                           "scored 0", cfg.batch_timeout_s, len(busy) + len(pending), len(responses))
        for i, r in enumerate(results):
            if r.reason.startswith(PATHOLOGICAL):
                logger.warning("answer check, sample %d: score 0, %s", i, r.reason)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        for w, worker in enumerate(self._workers):
            if worker is not None:
                try:
                    worker.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
                worker.process.join(timeout=5)
                self._kill(w)

    def __enter__(self) -> "AnswerChecker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- r_theta
@runtime_checkable
class RewardModelScorer(Protocol):
    """A reward model: one finite scalar per (prompt, response[, images]) -> float [B]."""

    def score(self, prompts: Sequence[str], responses: Sequence[str], images: Sequence[Any] | None) -> np.ndarray:
        ...


@dataclass(frozen=True)
class Calibration:
    """Reward-model score statistics on a calibration set: z = (s - mean) / std."""

    mean: float
    std: float
    count: int

    def standardize(self, scores: np.ndarray) -> np.ndarray:
        return ((np.asarray(scores, np.float64) - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "count": self.count}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        missing = {"mean", "std", "count"} - set(d)
        if missing:
            raise ValueError(f"Calibration.from_dict: missing keys {sorted(missing)}")
        return cls(float(d["mean"]), float(d["std"]), int(d["count"]))


def calibrate(scores: Sequence[float] | np.ndarray, ddof: int = 0) -> Calibration:
    """(mean, std) of reward-model scores on a calibration set (fp64, std with `ddof`)."""
    s = np.asarray(scores, np.float64).reshape(-1)
    if s.size <= max(1, ddof) or not np.all(np.isfinite(s)):
        raise ValueError(f"calibrate: need > {max(1, ddof)} finite scores, got {s.size} "
                         f"(finite: {np.isfinite(s).sum()})")
    std = float(s.std(ddof=ddof))
    if std <= 0.0:
        raise ValueError("calibrate: all calibration scores are equal (std 0): cannot standardise")
    return Calibration(float(s.mean()), std, int(s.size))


# ----------------------------------------------------------------------------- hybrid
@dataclass(frozen=True)
class HybridRewardConfig:
    """r = w_acc*r_rule + w_rm*r_theta~ + w_fmt*r_format (module docstring for r_theta~).

    rm_clip_tau: clip of the (standardised) RM score; None = no clip.
    rm_gate: "agree" keeps the RM term only where its sign agrees with correctness;
      "none" always keeps it.
    """

    w_acc: float = 1.0
    w_rm: float = 1.0
    w_fmt: float = 1.0
    rm_standardize: bool = True
    rm_clip_tau: float | None = 1.0
    rm_gate: str = "agree"
    think_opened_by_prompt: bool = False

    def __post_init__(self):
        if self.rm_gate not in RM_GATES:
            raise ValueError(f"HybridRewardConfig.rm_gate must be one of {RM_GATES}, got {self.rm_gate!r}")
        if self.rm_clip_tau is not None and not self.rm_clip_tau > 0:
            raise ValueError(f"HybridRewardConfig.rm_clip_tau must be > 0 or None, got {self.rm_clip_tau}")


@dataclass(frozen=True)
class RewardBatch:
    """Per-sample breakdown; arrays are float32 [B]. rm is the gated term before w_rm."""

    accuracy: np.ndarray
    format: np.ndarray
    rm_raw: np.ndarray
    rm: np.ndarray
    total: np.ndarray
    reason: tuple[str, ...]
    extracted: tuple[str | None, ...]


def rm_term(
    rm_raw: np.ndarray, accuracy: np.ndarray, has_reference: np.ndarray, config: HybridRewardConfig,
    calibration: Calibration | None,
) -> np.ndarray:
    """Standardise -> clip to [-tau, tau] -> gate (see module docstring); float32 [B]."""
    z = np.asarray(rm_raw, np.float32)
    if config.rm_standardize:
        if calibration is None:
            raise ValueError("rm_term: rm_standardize=True needs a Calibration (see `calibrate`)")
        z = calibration.standardize(z)
    if config.rm_clip_tau is not None:
        z = np.clip(z, -config.rm_clip_tau, config.rm_clip_tau)
    if config.rm_gate == "agree":
        correct = np.asarray(accuracy) > 0.5
        agrees = np.where(correct, z > 0, z < 0) | ~np.asarray(has_reference, bool)
        z = np.where(agrees, z, 0.0)
    return z.astype(np.float32)


def compute_rewards(
    prompts: Sequence[str],
    responses: Sequence[str],
    golds: Sequence[str | None],
    answer_types: Sequence[str | None],
    *,
    checker: AnswerChecker,
    config: HybridRewardConfig = HybridRewardConfig(),
    scorer: RewardModelScorer | None = None,
    calibration: Calibration | None = None,
    images: Sequence[Any] | None = None,
) -> RewardBatch:
    """Score a batch with the hybrid reward; `reason` is the answer check's reason."""
    n = len(responses)
    checks = checker.check_batch(responses, golds, answer_types)
    accuracy = np.array([c.score for c in checks], np.float32)
    fmt = np.array([format_reward(r, config.think_opened_by_prompt) for r in responses], np.float32)
    if config.w_rm != 0.0:
        if scorer is None:
            raise ValueError("compute_rewards: HybridRewardConfig.w_rm != 0 needs a RewardModelScorer")
        rm_raw = np.asarray(scorer.score(prompts, responses, images), np.float32)
        if rm_raw.shape != (n,) or not np.all(np.isfinite(rm_raw)):
            raise ValueError(f"compute_rewards: reward model returned shape {rm_raw.shape} (want ({n},)), "
                             f"non-finite at {np.flatnonzero(~np.isfinite(rm_raw.reshape(-1)))[:8].tolist()}")
        rm = rm_term(rm_raw, accuracy, [g is not None for g in golds], config, calibration)
    else:
        rm_raw = rm = np.zeros(n, np.float32)
    total = (config.w_acc * accuracy + config.w_rm * rm + config.w_fmt * fmt).astype(np.float32)
    return RewardBatch(accuracy, fmt, rm_raw, rm, total, tuple(c.reason for c in checks),
                       tuple(c.extracted for c in checks))
