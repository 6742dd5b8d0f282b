"""The GRPO trainer: rollouts (G per prompt) -> hybrid reward -> group advantages -> SSB ->
`num_iterations` updates over mini-batches with gradient accumulation -> metrics,
evaluation and checkpoints.

Everything the device sees has static shapes (see `batching`); everything else (rewards,
the buffer, data order) is host-side NumPy and is saved with each checkpoint, so a resumed
run continues exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from r1v2_jax.data.prompts import PromptConfig
from r1v2_jax.data.tokenizer import Tokenizer
from r1v2_jax.losses import ADVANTAGE_ESTIMATORS
from r1v2_jax.models import VLMConfig
from r1v2_jax.rl.batching import grpo_batch
from r1v2_jax.rl.evaluate import evaluate, evaluate_sampled
from r1v2_jax.rl.examples import PromptExample
from r1v2_jax.train.feed import Feed, as_feed
from r1v2_jax.rl.dynamic_sampling import collect_groups
from r1v2_jax.rl.grpo_step import (GRPOLossOptions, make_grpo_update, make_score_fn,
                                   rollout_correction_enabled)
from r1v2_jax.rl.off_policy import correction_terms
from r1v2_jax.rl.rewards import RMAdvantageOptions, hybrid_advantages
from r1v2_jax.rl.reward_shaping import apply_overlong, mask_truncated, truncation_keep
from r1v2_jax.rl.rollout import Sample, SamplingOptions, logprob_mismatch, rollout
from r1v2_jax.rl import ssb as ssb_lib
from r1v2_jax.train.masks import merge_params, split_params, trainable_parts
from r1v2_jax.train.optimizer import make_optimizer
from r1v2_jax.train.steps import cast_tree
from r1v2_jax.sharding import shardings_of
from r1v2_jax.train.trainer import Trainer, init_opt_state

Scorer = Callable[[PromptExample, str], dict[str, Any]]


def seq_len_for(longest_prompt: int, max_new_tokens: int, multiple: int = 16) -> int:
    """The rollout batch's sequence length: the longest prompt + max_new_tokens, rounded up."""
    return -(-(longest_prompt + max_new_tokens) // multiple) * multiple


# Compiled functions are shared by trainers with the same static settings (a second run,
# a resumed run, the demo's run without SSB), so they compile once per process.
@functools.lru_cache(maxsize=None)
def _optimizer(optim_items, updates_per_step):
    return make_optimizer(ml_collections.ConfigDict(dict(optim_items)),
                          updates_per_step=updates_per_step)


@functools.lru_cache(maxsize=None)
def _update_fn(config, opts, optim_items, updates_per_step, compute_dtype):
    return make_grpo_update(config, opts, _optimizer(optim_items, updates_per_step),
                            compute_dtype=compute_dtype)


@functools.lru_cache(maxsize=None)
def _score_fn(config, temperature):
    return make_score_fn(config, temperature)


class GRPOTrainer(Trainer):
    """cfg: the recipe ConfigDict (see configs/grpo_demo.py for every field)."""

    def __init__(self, cfg, model_config: VLMConfig, params, *, tokenizer: Tokenizer,
                 prompt: PromptConfig, train: "Sequence[PromptExample] | Feed",
                 heldout: Sequence[PromptExample], score: Scorer, workdir: str,
                 stage: str = "grpo", log: Callable[[str], None] = print, mesh=None, rules=None):
        super().__init__(cfg, workdir, stage=stage, log=log)
        self.config, self.tok, self.prompt = model_config, tokenizer, prompt
        # an in-memory list (the demo) or a streamed file (r1v2 train): train/feed.py
        self.feed = as_feed(train, int(cfg.train.seed))
        self.heldout, self.score = list(heldout), score
        g, r = cfg.grpo, cfg.rollout
        self.sampling = SamplingOptions(int(r.num_generations), int(r.max_new_tokens),
                                        float(r.temperature), float(r.top_p), int(r.top_k),
                                        float(r.repetition_penalty), tuple(r.stop_strings))
        self.batch_size = int(r.prompts_per_step) * int(r.num_generations)
        self.mini = int(g.mini_batch_size) or self.batch_size
        if self.batch_size % self.mini or self.mini % int(g.micro_batch_size):
            raise ValueError(f"grpo: batch {self.batch_size} must be a multiple of mini_batch_size "
                             f"{self.mini}, itself a multiple of micro_batch_size {g.micro_batch_size}")
        self.seq_len = seq_len_for(self.feed.limits.prompt_tokens, self.sampling.max_new_tokens)
        self.tiles_per_micro = int(g.micro_batch_size) * self.feed.limits.tiles
        size = model_config.vision.image_size
        self.image_shape = (size, size, model_config.vision.num_channels)

        self.mesh, self.rules = mesh, rules
        if mesh is not None:
            # Every parameter goes straight to its shard (a no-op for a checkpoint restored
            # onto the mesh); the update keeps the layout (sharding.compile_update).
            from r1v2_jax.sharding import param_shardings
            params = jax.device_put(params, param_shardings(model_config, mesh, rules))
        parts = trainable_parts(cfg.train.trainable)
        trainable, self.frozen = split_params(params, parts)
        self.compute_dtype = None
        if cfg.optim.master_fp32:
            self.compute_dtype = model_config.jnp_param_dtype
            trainable = cast_tree(trainable, jnp.float32)
        # The reference policy shares every frozen parameter; only the trainable part is copied.
        opts = GRPOLossOptions.from_config(g, r.temperature, r.max_new_tokens)
        keep_ref = opts.beta != 0.0 or opts.track_kl
        # the update donates `trainable`: without a reference it gets None, not an alias
        self.ref_trainable = jax.tree.map(jnp.copy, trainable) if keep_ref else None
        self.trainable = jax.tree.map(jnp.copy, trainable)  # the caller's params stay valid
        optim_items = tuple(sorted(cfg.optim.to_dict().items()))
        # optim.warmup_steps / total_steps count GRPO steps: all updates of a step share its lr
        updates_per_step = int(g.num_iterations) * (self.batch_size // self.mini)
        self.optimizer = _optimizer(optim_items, updates_per_step)
        self.opt_state = init_opt_state(self.optimizer, self.trainable, mesh)
        self.rng = jax.random.key_data(jax.random.key(int(cfg.train.seed)))
        self.ssb = None
        if cfg.ssb.enabled:
            self.ssb = ssb_lib.SelectiveSampleBuffer(ssb_lib.SSBConfig(**dict(cfg.ssb)),
                                                     seed=int(cfg.train.seed))
        on_policy, off_policy = (dataclasses.replace(opts, use_old_logps=old,
                                                     use_is_weights=self._needs_is())
                                 for old in (False, True))
        if mesh is None:
            self.update_on_policy = _update_fn(model_config, on_policy, optim_items,
                                               updates_per_step, self.compute_dtype)
            self.update_off_policy = _update_fn(model_config, off_policy, optim_items,
                                                updates_per_step, self.compute_dtype)
        else:  # pinned to this run's shardings: compiled per trainer
            state = (shardings_of(self.trainable), shardings_of(self.opt_state))
            self.update_on_policy, self.update_off_policy = (
                make_grpo_update(model_config, o, self.optimizer, compute_dtype=self.compute_dtype,
                                 mesh=mesh, rules=rules, state_shardings=state)
                for o in (on_policy, off_policy))
        self.score_logps = _score_fn(model_config, float(r.temperature))
        self.rm_options = RMAdvantageOptions.from_config(cfg.reward)
        if not self.rm_options.is_default and (g.get("advantage_estimator", "grpo") != "grpo"
                                               or g.scale != "group"):
            raise ValueError("config.reward.rm_scope / rm_scale / rm_share_cap need "
                             "config.grpo.advantage_estimator='grpo' and config.grpo.scale='group'")
        p = cfg.probe
        if int(p.prompts) > len(self.heldout):
            raise ValueError(f"config.probe.prompts={p.prompts} but only {len(self.heldout)} "
                             f"held-out prompts")
        if int(p.prompts) and (int(p.every) < 1 or int(p.num_samples) < 1 or not p.temperature > 0):
            raise ValueError(f"config.probe needs every >= 1, num_samples >= 1 and temperature > 0, "
                             f"got {p.every}, {p.num_samples}, {p.temperature}")
        self.counters = {"skipped_updates": 0}

    def _needs_is(self) -> bool:
        return bool(self.cfg.ssb.enabled) and self.cfg.ssb.off_policy == "truncated_is"

    # ----------------------------------------------------------------------------- state
    def params(self):
        return merge_params(cast_tree(self.trainable, self.config.jnp_param_dtype)
                            if self.compute_dtype is not None else self.trainable, self.frozen)

    def device_state(self):
        state = {"trainable": self.trainable, "opt_state": self.opt_state, "rng": self.rng}
        if self.ref_trainable is not None:
            state["ref_trainable"] = self.ref_trainable
        return state

    def load_device_state(self, state):
        self.trainable, self.opt_state = state["trainable"], state["opt_state"]
        self.ref_trainable, self.rng = state.get("ref_trainable"), state["rng"]

    def host_state(self):
        return {"data": self.feed.get_state(), "counters": dict(self.counters),
                "ssb": self.ssb.state_dict() if self.ssb is not None else None}

    def load_host_state(self, host):
        self.feed.set_state(host["data"])
        self.counters = dict(host["counters"])
        if self.ssb is not None:
            self.ssb.load_state_dict(host["ssb"])

    # ----------------------------------------------------------------------------- loop
    def evaluate(self) -> dict[str, float]:
        out = evaluate(self.config, self.params(), self.heldout, tokenizer=self.tok,
                       prompt=self.prompt, max_new_tokens=self.sampling.max_new_tokens,
                       batch_size=int(self.cfg.rollout.eval_batch_size), score=self.score)
        if self.step == 0:  # the start of the probe curve (train steps log the rest)
            out.update(self.probe())
        return out

    def probe(self) -> dict[str, float]:
        """Sampled accuracy (avg@k) and pass@k of the current policy on the first
        probe.prompts held-out prompts, k = probe.num_samples at probe.temperature, the
        same prompts and sampling seed every time: a learning curve without the noise of
        each step's new prompts. {} when off (probe.prompts = 0)."""
        p = self.cfg.probe
        if not int(p.prompts):
            return {}
        m = evaluate_sampled(self.config, self.params(), self.heldout[:int(p.prompts)],
                             tokenizer=self.tok, prompt=self.prompt,
                             max_new_tokens=self.sampling.max_new_tokens,
                             batch_size=int(self.cfg.rollout.eval_batch_size),
                             num_samples=int(p.num_samples), temperature=float(p.temperature),
                             seed=int(self.cfg.train.seed), score=self.score)
        return {"probe/accuracy": m["eval_sampled_accuracy"], "probe/pass_at_k": m["eval_pass_at_k"]}

    def _probe_due(self) -> bool:
        """After the update of every probe.every-th step and of the last step."""
        return self.step % int(self.cfg.probe.every) == 0 or self.step == int(self.cfg.train.steps)

    def train_step(self) -> dict[str, Any]:
        t0 = time.time()
        cfg = self.cfg
        self.rng, key = jax.random.split(jax.random.wrap_key_data(self.rng))
        self.rng = jax.random.key_data(self.rng)
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
        g = cfg.grpo
        shaping: dict[str, float] = {}
        health: list[dict[str, float]] = []  # each rollout call's engine metrics
        rm_part: dict[int, tuple[Sample, float]] = {}  # id -> (sample, w_rm * RM term)
        w = cfg.reward

        def draw(round_: int):  # one batch of prompts -> groups with shaped rewards
            prompts = self.feed.take(int(cfg.rollout.prompts_per_step))
            drawn = rollout(self.config, self.params(), prompts, self.sampling, tokenizer=self.tok,
                            prompt=self.prompt, seed=(seed + round_) % 2**31,
                            policy_version=self.step, score=self.score, mesh=self.mesh,
                            rules=self.rules, slots=int(cfg.rollout.slots) or None)
            # the RM part, before any shaping (the scorer's reward is w_acc*accuracy +
            # w_fmt*format + w_rm*rm: rl/scoring.make_scorer)
            for s in (s for grp in drawn for s in grp):
                rm_part[id(s)] = (s, 0.0 if float(w.w_rm) == 0.0 else
                                  s.reward - float(w.w_acc) * s.accuracy - float(w.w_fmt) * s.format)
            shaping.update(apply_overlong([s for grp in drawn for s in grp], g.get("overlong"),
                                          self.sampling.max_new_tokens))
            health.append(drawn.metrics)
            return drawn

        ds = dict(g.get("dynamic_sampling") or {})
        if ds.get("enabled", False):
            groups, ds_metrics = collect_groups(draw, int(cfg.rollout.prompts_per_step),
                                                max_rounds=int(ds.get("max_rounds", 4)),
                                                metric=ds.get("metric", "reward"))
        else:
            groups, ds_metrics = draw(0), {}
        fresh = [s for grp in groups for s in grp]
        rollout_seconds = time.time() - t0  # generation + reward scoring
        rewards = np.asarray([s.reward for s in fresh], np.float32)
        estimator = ADVANTAGE_ESTIMATORS.get(g.get("advantage_estimator", "grpo"),
                                             "config.grpo.advantage_estimator")
        rm_metrics: dict[str, float] = {}
        if self.rm_options.is_default:
            adv = np.asarray(estimator(
                jnp.asarray(rewards), self.sampling.num_samples, scale=g.scale,
                std_ddof=int(g.std_ddof), eps=float(g.adv_eps),
                lengths=jnp.asarray([len(s.completion_ids) for s in fresh], jnp.float32)))
        else:  # the RM term kept in check (reward.rm_scope / rm_scale / rm_share_cap)
            rm = np.asarray([rm_part[id(s)][1] for s in fresh], np.float64)
            adv, rm_metrics = hybrid_advantages(rewards - rm, rm, self.sampling.num_samples,
                                                self.rm_options, std_ddof=int(g.std_ddof),
                                                eps=float(g.adv_eps))
        for s, a in zip(fresh, adv):
            s.advantage = float(a)
        if g.get("mask_truncated_completions", False):
            mask_truncated(fresh)
        tol = float(cfg.ssb.adv_tol)
        effective_fresh = float(np.mean([abs(s.advantage) > tol for s in fresh]))
        if self.ssb is not None:
            batch, is_weights, ssb_metrics = self._assemble_with_ssb(fresh)
        else:
            batch, is_weights, ssb_metrics = fresh, None, {"replay_ratio": 0.0}
        rc_metrics: dict[str, float] = {}
        loss_mask = None  # [N, T-1]: rejection sampling's kept tokens
        if rollout_correction_enabled(g):
            is_weights, loss_mask, rc_metrics = correction_terms(batch, self._score(batch),
                                                                 g.rollout_correction, is_weights)
        effective_batch = float(np.mean([abs(s.advantage) > tol for s in batch]))
        rollout_health = self._rollout_health(fresh, health)
        t_update = time.time()
        upd = self._update(batch, is_weights, loss_mask)
        seconds = time.time() - t0
        rollout_health.update({"rollout/seconds": rollout_seconds,
                               "rollout/time_share": rollout_seconds / seconds,
                               "update/seconds": time.time() - t_update})
        probe = self.probe() if self._probe_due() else {}  # not in `seconds`
        record = {
            "step": self.step, "stage": self.stage,
            "reward_mean": float(rewards.mean()),
            "accuracy": float(np.mean([s.accuracy for s in fresh])),
            "format_rate": float(np.mean([s.format for s in fresh])),
            "hallucination_rate": float(np.mean([s.hallucinated for s in fresh])),
            "response_len_mean": float(np.mean([len(s.completion_ids) for s in fresh])),
            "truncated_rate": float(np.mean([s.truncated for s in fresh])),
            "effective_ratio_fresh": effective_fresh,
            "effective_ratio_batch": effective_batch,
            **probe, **rm_metrics,
            **shaping, **ds_metrics, **rc_metrics, **ssb_metrics, **upd, **rollout_health,
            "skipped_updates": self.counters["skipped_updates"],
            "seconds": seconds,
        }
        return record

    def _rollout_health(self, fresh: list[Sample], health: list[dict[str, float]]):
        """The engine's metrics of this step's rollout calls (tokens/s, slot occupancy...)
        and, every rollout.logprob_check_every steps, the rollout-vs-trainer log-prob
        mismatch on the fresh samples (one extra forward over them)."""
        out = {k: float(np.mean([h[k] for h in health])) for k in health[0]} if health else {}
        if health:
            out["rollout/generate_seconds"] = float(sum(h["rollout/generate_seconds"]
                                                        for h in health))
        every = int(self.cfg.rollout.logprob_check_every)
        if every and self.step % every == 0:
            now = self._score(fresh)
            starts = [len(s.example.prompt_ids) - 1 for s in fresh]
            out.update(logprob_mismatch(
                [s.behaviour_logps for s in fresh],
                [now[i, a:a + len(s.behaviour_logps)] for i, (s, a) in
                 enumerate(zip(fresh, starts))]))
        return out

    def _assemble_with_ssb(self, fresh: list[Sample]):
        """Fresh effective samples first; zero-advantage slots refilled from the buffer.
        Buffer entries hold (prompt uid, response ids, behaviour log-probs): the prompt
        itself is re-read from the dataset, so checkpoints stay small."""
        wrapped = [ssb_lib.Sample(ssb_lib.Payload(s.example.uid, s.completion_ids, s.behaviour_logps),
                                  s.reward, s.advantage, s.policy_version) for s in fresh]
        picked = self.ssb.assemble(wrapped, step=self.step, policy_version=self.step)
        originals = {id(w): s for w, s in zip(wrapped, fresh)}
        batch = []
        for w in picked.samples:
            if id(w) in originals:  # a fresh sample goes on as itself (its `truncated` too)
                batch.append(originals[id(w)])
                continue
            p = w.payload
            batch.append(Sample(self.feed.lookup(p.prompt_ref), np.asarray(p.response_ids, np.int32),
                                np.asarray(p.behaviour_logps, np.float32), "", False,
                                reward=w.reward, advantage=w.advantage,
                                policy_version=w.policy_version))
        weights = None
        if self._needs_is():
            weights = self._truncated_is_weights(batch, picked.replayed)
        return batch, weights, {k.removeprefix("ssb/"): v for k, v in picked.metrics.as_dict().items()}

    def _truncated_is_weights(self, batch: list[Sample], replayed: Sequence[bool]) -> np.ndarray:
        """Per-sequence weight min(exp(mean_t(logp_now - logp_behaviour)), cap) for replayed
        samples (1 for fresh ones): a truncated importance weight against the policy that
        generated them."""
        cap = float(self.cfg.ssb.is_cap)
        logps = self._score(batch)
        w = np.ones(len(batch), np.float32)
        for i, (s, rep) in enumerate(zip(batch, replayed)):
            if rep:
                start = len(s.example.prompt_ids) - 1
                now = logps[i, start:start + len(s.behaviour_logps)]
                w[i] = min(float(np.exp(np.mean(now - s.behaviour_logps))), cap)
        return w

    def _score(self, samples: list[Sample]) -> np.ndarray:
        """Current-policy token log-probs of samples, [N, T-1] (one forward, no update)."""
        g = self.cfg.grpo
        b = grpo_batch(samples, seq_len=self.seq_len, micro=len(samples),
                       tiles_per_micro=len(samples) * (self.tiles_per_micro // int(g.micro_batch_size)),
                       pad_id=self.tok.pad_id, image_shape=self.image_shape)
        pix = None if b.pixel_values is None else b.pixel_values[0]
        from r1v2_jax.sharding.host import to_host
        return to_host(self.score_logps(self.params(), b.input_ids[0], b.attention_mask[0], pix))

    def _put(self, mb):
        """Shards each micro-batch's rows over the batch mesh axes ([M, b, ...]: axis 1)."""
        if self.mesh is None:
            return mb
        from jax.sharding import NamedSharding, PartitionSpec as P
        from r1v2_jax.sharding import batch_sharding

        def put(x):
            spec = batch_sharding(self.mesh, self.rules, x.shape[1:]).spec
            return jax.device_put(x, NamedSharding(self.mesh, P(None, *spec)))
        return jax.tree.map(put, mb)

    def _update(self, batch: list[Sample], is_weights, loss_mask=None) -> dict[str, float]:
        """loss_mask: None or [N, T-1] (rollout-correction rejection); truncated completions
        leave it too under `mask_truncated_completions` (TRL's completion mask)."""
        g = self.cfg.grpo
        if g.get("mask_truncated_completions", False):
            keep = truncation_keep(batch)[:, None]
            loss_mask = keep if loss_mask is None else loss_mask * keep
        iterations = int(g.num_iterations)
        # Only the step's first optimizer update sees the policy the batch was scored with
        # (rho == 1); every later one (the next mini-batch, the next iteration) needs the
        # step's old log-probs, or its ratio is 1 and the clip never acts. TRL likewise
        # keeps old log-probs once a generation batch spans several optimizer steps.
        several_updates = iterations > 1 or self.mini < len(batch)
        old = self._score(batch) if several_updates else None
        order = np.arange(len(batch))
        sums: dict[str, list[float]] = {}
        for it in range(iterations):
            for start in range(0, len(batch), self.mini):
                idx = order[start:start + self.mini]
                mb = grpo_batch([batch[i] for i in idx], seq_len=self.seq_len,
                                micro=int(g.micro_batch_size), tiles_per_micro=self.tiles_per_micro,
                                pad_id=self.tok.pad_id, image_shape=self.image_shape,
                                is_weights=None if is_weights is None else is_weights[idx],
                                loss_mask=None if loss_mask is None else loss_mask[idx])
                if it == 0 and start == 0:
                    fn = self.update_on_policy
                else:
                    mb.old_logps = old[idx].reshape(mb.old_logps.shape)
                    fn = self.update_off_policy
                self.trainable, self.opt_state, m = fn(self.frozen, self.ref_trainable,
                                                       self.trainable, self.opt_state,
                                                       self._put(mb))
                for k, v in m.items():
                    sums.setdefault(k, []).append(float(v))
        self.counters["skipped_updates"] += int(sum(sums.get("skipped", [0])))
        self.step += 1
        out = {k: float(np.mean(v)) for k, v in sums.items() if k != "skipped"}
        return out
