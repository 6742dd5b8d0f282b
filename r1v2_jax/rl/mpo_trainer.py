"""The MPO trainer: iterated rounds of  sample -> score -> pair -> train.

Each round draws `mpo.prompts_per_round` prompts, samples `mpo.num_samples` responses per
prompt with the current policy, scores them with the hybrid reward (rule + format +
optional reward model), keeps best-vs-worst pairs whose 0-100 score margin reaches
`mpo.threshold` (`rl/pairs.py`), then runs `mpo.steps_per_round` optimizer steps of
`mpo.batch_size` pairs drawn from that round's pool (epoch after epoch). `mpo.loss`
selects MPO, DPO-only or SFT-only (the paper's Table 3 comparison) on the same pipeline.

The reference policy is the policy at the start of training: frozen parameters shared,
trainable part copied. State saved with every checkpoint: device (trainable, optimizer,
reference copy, BCO delta, RNG, step) and host JSON (prompt order, the round's pair pool
as prompt uid + completion ids, its order, the round statistics), so a resumed run
continues exactly.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from r1v2_jax.data.prompts import PromptConfig
from r1v2_jax.data.records import DataState, next_batch
from r1v2_jax.data.tokenizer import Tokenizer
from r1v2_jax.losses import BCODeltaState, bco_delta_init
from r1v2_jax.models import VLMConfig
from r1v2_jax.rl.batching import pack_sequences, pack_tiles, to_micro
from r1v2_jax.rl.evaluate import evaluate
from r1v2_jax.rl.examples import PromptExample
from r1v2_jax.rl.grpo_trainer import seq_len_for
from r1v2_jax.train.feed import Feed, as_feed
from r1v2_jax.rl.mpo_step import MPOBatch, MPOLossOptions, make_mpo_update
from r1v2_jax.rl.pairs import PreferencePair, hybrid_reward_range, pair_seq_len, sample_pairs
from r1v2_jax.rl.rollout import SamplingOptions
from r1v2_jax.train.masks import merge_params, split_params, trainable_parts
from r1v2_jax.train.optimizer import make_optimizer
from r1v2_jax.train.steps import cast_tree
from r1v2_jax.sharding import shardings_of
from r1v2_jax.train.trainer import Trainer, init_opt_state


def stage_config(cfg, section: str) -> ml_collections.ConfigDict:
    """A copy of the recipe whose `optim`, `train` and `reward` sections take the partial
    overrides in cfg.<section>.optim / .train / .reward (a stage's own learning rate,
    steps, reward weights...)."""
    out = ml_collections.ConfigDict(cfg.to_dict())
    for part in ("optim", "train", "reward"):
        overrides = cfg[section].get(part)
        overrides = overrides.to_dict() if overrides is not None else {}
        unknown = sorted(set(overrides) - set(out[part].keys()))
        if unknown:
            raise ValueError(f"{section}.{part}: unknown field(s) {unknown}; known: "
                             f"{sorted(out[part].keys())}")
        out[part].update(overrides)
    return out


def mpo_batch(pairs: Sequence[PreferencePair], *, seq_len: int, micro: int, tiles_per_micro: int,
              pad_id: int, image_shape: tuple[int, int, int]) -> MPOBatch:
    prompts = [p.example.prompt_ids for p in pairs]
    sides = [pack_sequences(prompts, [getattr(p, f"{side}_ids") for p in pairs], seq_len, pad_id)
             for side in ("chosen", "rejected")]
    pixels = None
    if tiles_per_micro:
        pixels = pack_tiles([p.example.pixel_values for p in pairs], tiles_per_micro, micro,
                            image_shape)
    arrays = [to_micro(x, micro) for side in sides for x in side]
    return MPOBatch(*arrays, pixel_values=pixels)


def _combine(stats: list[dict[str, float]]) -> dict[str, float]:
    """Round statistics over its sampling attempts: counts add up, rates average."""
    if not stats:
        return {}
    counts = {"groups", "pairs", "all_equal_groups"}
    out = {}
    for k in stats[0]:
        values = np.asarray([s[k] for s in stats], np.float64)
        finite = values[np.isfinite(values)]
        if k in counts or k.startswith("pairs_at_"):
            out[k] = float(values.sum())
        else:  # a rate: None when no attempt defines it (e.g. no pair, no known content)
            out[k] = float(finite.mean()) if finite.size else None
    return out


@functools.lru_cache(maxsize=8)
def _optimizer_and_update(config: VLMConfig, opts: MPOLossOptions, optim_json: str, compute_dtype):
    """One jitted update per (model, loss, optimizer) setting, shared by trainer instances
    (a resumed trainer or a second run with the same settings does not compile again)."""
    optimizer = make_optimizer(ml_collections.ConfigDict(json.loads(optim_json)))
    return optimizer, make_mpo_update(config, opts, optimizer, compute_dtype=compute_dtype)


class MPOTrainer(Trainer):
    """cfg: the recipe (configs/mpo_base.py `mpo_recipe` documents every field); pass it
    through `stage_config(cfg, "mpo")` first when cfg.mpo carries optim/train overrides."""

    def __init__(self, cfg, model_config: VLMConfig, params, *, tokenizer: Tokenizer,
                 prompt: PromptConfig, train: "Sequence[PromptExample] | Feed",
                 heldout: Sequence[PromptExample], score: Callable[..., dict[str, Any]],
                 workdir: str, stage: str = "mpo", log: Callable[[str], None] = print,
                 offline_pairs: Sequence[PreferencePair] = (), mesh=None, rules=None):
        super().__init__(cfg, workdir, stage=stage, log=log)
        self.eval_at_start = bool(cfg.mpo.eval_at_start)
        self.config, self.tok, self.prompt = model_config, tokenizer, prompt
        # an in-memory list (the demo) or a streamed file (r1v2 train): train/feed.py
        self.feed = as_feed(train, int(cfg.train.seed))
        self.heldout, self.score = list(heldout), score
        m = cfg.mpo
        self.sampling = SamplingOptions(int(m.num_samples), int(cfg.rollout.max_new_tokens),
                                        float(m.temperature), float(m.top_p), int(m.top_k))
        self.batch_size, self.micro = int(m.batch_size), int(m.micro_batch_size)
        if self.batch_size % self.micro:
            raise ValueError(f"mpo.batch_size={self.batch_size} must be a multiple of "
                             f"mpo.micro_batch_size={self.micro}")
        self.score_range = (tuple(float(x) for x in m.score_range) if len(m.score_range)
                            else hybrid_reward_range(cfg.reward))
        self.offline = list(offline_pairs)  # e.g. `load_preference_pairs`: in every round's pool
        # static shapes that fit every sample the policy can produce and every offline pair
        self.seq_len = max([seq_len_for(self.feed.limits.prompt_tokens,
                                        self.sampling.max_new_tokens)]
                           + ([pair_seq_len(self.offline)] if self.offline else []))
        max_tiles = max([self.feed.limits.tiles]
                        + [len(p.example.pixel_values) for p in self.offline])
        self.tiles_per_micro = self.micro * max_tiles
        size = model_config.vision.image_size
        self.image_shape = (size, size, model_config.vision.num_channels)
        self.mesh, self.rules = mesh, rules
        if mesh is not None:
            from r1v2_jax.sharding import param_shardings
            params = jax.device_put(params, param_shardings(model_config, mesh, rules))
        trainable, self.frozen = split_params(params, trainable_parts(cfg.train.trainable))
        self.compute_dtype = None
        if cfg.optim.master_fp32:
            self.compute_dtype = model_config.jnp_param_dtype
            trainable = cast_tree(trainable, jnp.float32)
        self.trainable = jax.tree.map(jnp.copy, trainable)  # the update donates it
        self.ref_trainable = jax.tree.map(jnp.copy, trainable)
        opts, optim_json = MPOLossOptions.from_config(m), json.dumps(cfg.optim.to_dict(),
                                                                     sort_keys=True)
        self.optimizer, self.update = _optimizer_and_update(model_config, opts, optim_json,
                                                            self.compute_dtype)
        self.opt_state = init_opt_state(self.optimizer, self.trainable, mesh)
        if mesh is not None:  # pinned to this run's shardings: compiled per trainer
            self.update = make_mpo_update(
                model_config, opts, self.optimizer, compute_dtype=self.compute_dtype, mesh=mesh,
                rules=rules, state_shardings=(shardings_of(self.trainable),
                                              shardings_of(self.opt_state)))
        self.delta: BCODeltaState = bco_delta_init()
        self.rng = jax.random.key_data(jax.random.key(int(cfg.train.seed)))
        self.online: list[PreferencePair] = []
        self.pool: list[PreferencePair] = []
        self.pool_state = DataState()
        self.round_stats: dict[str, Any] = {}
        self.counters = {"skipped_updates": 0, "rounds": 0, "sampling_attempts": 0}

    # ----------------------------------------------------------------------------- state
    def params(self):
        trainable = self.trainable
        if self.compute_dtype is not None:
            trainable = cast_tree(trainable, self.config.jnp_param_dtype)
        return merge_params(trainable, self.frozen)

    def device_state(self):
        return {"trainable": self.trainable, "opt_state": self.opt_state,
                "ref_trainable": self.ref_trainable, "delta": self.delta, "rng": self.rng}

    def load_device_state(self, state):
        self.trainable, self.opt_state = state["trainable"], state["opt_state"]
        self.ref_trainable, self.rng = state["ref_trainable"], state["rng"]
        self.delta = BCODeltaState(*state["delta"])

    def host_state(self):
        pool = [{"uid": p.example.uid, "chosen": p.chosen_ids, "rejected": p.rejected_ids,
                 "scores": [p.chosen_score, p.rejected_score],
                 "hallucinated": [p.chosen_hallucinated, p.rejected_hallucinated]}
                for p in self.online]
        return {"data": self.feed.get_state(), "pool": pool,
                "pool_state": self.pool_state.to_dict(), "round_stats": dict(self.round_stats),
                "counters": dict(self.counters)}

    def load_host_state(self, host):
        self.feed.set_state(host["data"])
        self.online = [PreferencePair(self.feed.lookup(d["uid"]), np.asarray(d["chosen"], np.int32),
                                      np.asarray(d["rejected"], np.int32), *map(float, d["scores"]),
                                      *map(bool, d["hallucinated"])) for d in host["pool"]]
        self.pool = self.online + self.offline
        self.pool_state = DataState.from_dict(host["pool_state"])
        self.round_stats, self.counters = dict(host["round_stats"]), dict(host["counters"])

    # ----------------------------------------------------------------------------- loop
    def evaluate(self) -> dict[str, float]:
        return evaluate(self.config, self.params(), self.heldout, tokenizer=self.tok,
                        prompt=self.prompt, max_new_tokens=self.sampling.max_new_tokens,
                        batch_size=int(self.cfg.rollout.eval_batch_size), score=self.score)

    def _new_round(self) -> None:
        """Samples prompt batches until the pool (with the offline pairs) holds
        mpo.min_pairs_per_round pairs or mpo.max_sampling_attempts batches were drawn;
        mpo.prompts_per_round = 0 trains on the offline pairs only."""
        m = self.cfg.mpo
        online, stats = [], []
        attempts = int(m.max_sampling_attempts) if int(m.prompts_per_round) > 0 else 0
        for _ in range(attempts):
            self.rng, key = jax.random.split(jax.random.wrap_key_data(self.rng))
            self.rng = jax.random.key_data(self.rng)
            seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
            prompts = self.feed.take(int(m.prompts_per_round))
            pairs, st = sample_pairs(
                self.config, self.params(), prompts, self.sampling, tokenizer=self.tok,
                prompt=self.prompt, seed=seed, policy_version=self.step, score=self.score,
                score_range=self.score_range, threshold=float(m.threshold),
                report_thresholds=tuple(float(t) for t in m.report_thresholds),
                scale=float(m.score_scale),
                require_correct_chosen=bool(m.require_correct_chosen))
            online += pairs
            stats.append(st.as_dict())
            self.counters["sampling_attempts"] += 1
            if len(online) + len(self.offline) >= int(m.min_pairs_per_round):
                break
        if not online and not self.offline:
            raise RuntimeError(
                f"[{self.stage}] no preference pair in {len(stats)} sampling attempt(s) of "
                f"{m.prompts_per_round} prompts: every group's score margin is below "
                f"mpo.threshold={m.threshold} (or all equal, or, with "
                f"mpo.require_correct_chosen, no correct answer); lower the threshold or raise "
                f"mpo.num_samples / mpo.temperature")
        self.online, self.pool_state = online, DataState()
        self.pool = online + self.offline
        self.counters["rounds"] += 1
        self.round_stats = _combine(stats)

    def train_step(self) -> dict[str, Any]:
        t0 = time.time()
        if self.step % int(self.cfg.mpo.steps_per_round) == 0 or not self.pool:
            self._new_round()
        order_seed = int(self.cfg.train.seed) + self.counters["rounds"]  # a new order per round
        batch_pairs, self.pool_state = next_batch(self.pool, self.batch_size, self.pool_state,
                                                  order_seed)
        batch = mpo_batch(batch_pairs, seq_len=self.seq_len, micro=self.micro,
                          tiles_per_micro=self.tiles_per_micro, pad_id=self.tok.pad_id,
                          image_shape=self.image_shape)
        self.trainable, self.opt_state, self.delta, m = self.update(
            self.frozen, self.ref_trainable, self.trainable, self.opt_state, self.delta,
            self._put(batch))
        m = {k: float(v) for k, v in m.items()}
        self.counters["skipped_updates"] += int(m.pop("skipped"))
        self.step += 1
        return {"step": self.step, "stage": self.stage, **m, "round": self.counters["rounds"],
                **{k if k.startswith("sampled") else f"round_{k}": v
                   for k, v in self.round_stats.items()},
                "pool_size": len(self.pool), "skipped_updates": self.counters["skipped_updates"],
                "seconds": time.time() - t0}

    def _put(self, batch):
        """Shards each micro-batch's rows over the batch mesh axes ([M, b, ...]: axis 1)."""
        if self.mesh is None:
            return batch
        from jax.sharding import NamedSharding, PartitionSpec as P
        from r1v2_jax.sharding import batch_sharding

        def put(x):
            spec = batch_sharding(self.mesh, self.rules, x.shape[1:]).spec
            return jax.device_put(x, NamedSharding(self.mesh, P(None, *spec)))
        return jax.tree.map(put, batch)
