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
                        # the pipe closes before the process is reaped: join it, or the
                        # exit code still reads None (bounded: a closed pipe, a live worker)
                        self._workers[w].process.join(timeout=cfg.check_timeout_s)
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


# ----------------------------------------------------------------------------- RM term vs answer
RM_SCOPES = ("all", "mixed_groups")
RM_SCALES = ("group", "batch")


@dataclass(frozen=True)
class RMAdvantageOptions:
    """How far the reward-model term may move GRPO advantages (config `reward.rm_scope`,
    `reward.rm_scale`, `reward.rm_share_cap`). The defaults ("all", "group", 0) are plain
    GRPO on the total hybrid reward.

    R1V2's hybrid reward (eq. 7) combines rule-based verification with the reward model
    and warns that an excessive reward-model signal induces visual hallucination; it gives
    the RM a calibrated threshold but no values. These options are our CHOICE of how to keep
    the answer signal in charge. With group std scaling, an RM difference of 0.015 in an
    all-correct group becomes an advantage of about +-1 (as large as any in a genuinely
    mixed group), so the RM alone decides updates there. Each option removes that:

    rm_scope "mixed_groups" (acts on REWARDS, before the advantage): the RM term is set to 0
      in groups whose rule rewards (everything but the RM term) are all equal, so such a
      group has A = 0, as without an RM; where the answers differ the RM orders responses
      within the same rule reward. Rewards are the right place: the group then simply has
      no signal (the SSB sees |A| = 0 and replays something else).
    rm_scale "batch" (acts on ADVANTAGES): A = A_rule + A_rm with
      A_rule = (r_rule - mean_g r_rule) / (std_g(r_rule) + eps)   (answer signal, per group)
      A_rm   = (r_rm - mean_g r_rm) / (std_batch(r) + eps)        (r = r_rule + r_rm)
      so an RM difference keeps the size it has next to the batch's reward spread instead
      of being stretched by a tiny group std. It needs the split of the reward into its
      parts, hence advantages. ("group": one denominator std_g(r) + eps for both parts,
      i.e. plain GRPO on r.)
    rm_share_cap c in [0, 1) (acts on ADVANTAGES, last): |A_rm| <= c / (1 - c) * |A_rule|
      per sample, i.e. the RM term's share |A_rm| / (|A_rule| + |A_rm|) <= c; where the
      answer signal is 0 the RM term is 0. A share is only defined on the advantage split.
      0 = off.
    """

    scope: str = "all"
    scale: str = "group"
    share_cap: float = 0.0

    def __post_init__(self):
        if self.scope not in RM_SCOPES:
            raise ValueError(f"config.reward.rm_scope must be one of {RM_SCOPES}, got {self.scope!r}")
        if self.scale not in RM_SCALES:
            raise ValueError(f"config.reward.rm_scale must be one of {RM_SCALES}, got {self.scale!r}")
        if not 0.0 <= self.share_cap < 1.0:
            raise ValueError(f"config.reward.rm_share_cap must be in [0, 1) (0 = off), got {self.share_cap}")

    @property
    def is_default(self) -> bool:
        return self == RMAdvantageOptions()

    @classmethod
    def from_config(cls, reward_cfg) -> "RMAdvantageOptions":
        return cls(str(reward_cfg.rm_scope), str(reward_cfg.rm_scale), float(reward_cfg.rm_share_cap))


def _groups(x: np.ndarray, group_size: int) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if group_size < 1 or x.size % group_size:
        raise ValueError(f"{x.size} rewards do not split into groups of {group_size}")
    return x.reshape(-1, group_size)


def scope_rm(rule: np.ndarray, rm: np.ndarray, group_size: int, scope: str) -> np.ndarray:
    """The RM term after `rm_scope` (RMAdvantageOptions): "mixed_groups" zeroes it in
    groups whose rule rewards are all equal. float64 [B]."""
    rm_g = _groups(rm, group_size)
    if scope == "mixed_groups":
        r = _groups(rule, group_size)
        rm_g = np.where(np.all(r == r[:, :1], axis=1, keepdims=True), 0.0, rm_g)
    return rm_g.reshape(-1)


def hybrid_advantages(rule: np.ndarray, rm: np.ndarray, group_size: int, opts: RMAdvantageOptions,
                      *, std_ddof: int = 1, eps: float = 1e-4) -> tuple[np.ndarray, dict[str, float]]:
    """GRPO advantages of r = rule + rm under `opts` (formulas: RMAdvantageOptions).

    rule: [B] every reward part but the RM term (w_acc*accuracy + w_fmt*format + shaping);
    rm: [B] the weighted RM term (w_rm * r_theta~); groups are consecutive runs of
    `group_size`. Returns (A float32 [B], metrics): rm_adv_share = sum|A_rm| / sum(|A_rule|
    + |A_rm|) over the batch (0 when both are 0) and rm_scoped_groups = share of groups whose
    RM term `rm_scope` removed.
    """
    rule_g = _groups(rule, group_size)
    rm_g = scope_rm(rule, rm, group_size, opts.scope).reshape(rule_g.shape)
    if group_size <= std_ddof:
        raise ValueError(f"hybrid_advantages: group_size {group_size} must be > std_ddof {std_ddof}")
    total = rule_g + rm_g
    d_rule = rule_g - rule_g.mean(axis=1, keepdims=True)
    d_rm = rm_g - rm_g.mean(axis=1, keepdims=True)
    if opts.scale == "group":
        den_rule = den_rm = total.std(axis=1, ddof=std_ddof, keepdims=True) + eps
    else:
        den_rule = rule_g.std(axis=1, ddof=std_ddof, keepdims=True) + eps
        den_rm = total.std(ddof=std_ddof) + eps
    a_rule, a_rm = d_rule / den_rule, d_rm / den_rm
    if opts.share_cap > 0.0:
        limit = opts.share_cap / (1.0 - opts.share_cap) * np.abs(a_rule)
        a_rm = np.clip(a_rm, -limit, limit)
    both = np.abs(a_rule).sum() + np.abs(a_rm).sum()
    scoped = (np.all(rule_g == rule_g[:, :1], axis=1) if opts.scope == "mixed_groups"
              else np.zeros(len(rule_g), bool))
    metrics = {"rm_adv_share": float(np.abs(a_rm).sum() / both) if both > 0 else 0.0,
               "rm_scoped_groups": float(scoped.mean())}
    return (a_rule + a_rm).reshape(-1).astype(np.float32), metrics
