"""What a stage trains on, and how the product path builds it from a recipe's files.

`StageInputs` is the one input of every recipe function (`recipes.sft.run`, `.reward_model`,
`.mpo`, `.grpo`): the model config and parameters, tokenizer, prompt format, train and
held-out sets, the scorer, the mesh. `r1v2 train` builds it from files with
`inputs_from_config` (a converted checkpoint, JSONL records); the demo builds it from its
synthetic task; both then run the very same recipe.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from r1v2_jax.data.prompts import PromptConfig
from r1v2_jax.data.tokenizer import Tokenizer
from r1v2_jax.models import VLMConfig
from r1v2_jax.recipes import paths
from r1v2_jax.recipes.validate import validate_recipe
from r1v2_jax.train.feed import FeedLimits, limits_of

# uids of held-out pairs and offline MPO pairs: apart from any training row index
HELDOUT_UID_OFFSET = 10**9


@dataclasses.dataclass
class StageInputs:
    model: VLMConfig
    params: Any  # full parameter tree, already on the mesh when `mesh` is set
    tokenizer: Tokenizer
    prompt: PromptConfig
    # PromptExample (mpo, grpo), SFTExample (sft), PreferencePair (rm): a sequence (the demo)
    # or a train.feed.Feed (r1v2 train streams its records)
    train: Any
    heldout: Sequence[Any]  # same kinds (rm: held-out pairs for ranking accuracy)
    score: Callable | None = None  # hybrid-reward batch scorer (mpo, grpo; eval of sft)
    offline_pairs: Sequence[Any] = ()  # mpo: data.preferences
    tokenizer_dir: str | None = None  # copied into final/ (None: tokenizer.save writes it)
    mesh: Any = None
    rules: Any = None


# ----------------------------------------------------------------------------- model
def load_policy(cfg, mesh, rules, log: Callable[[str], None] = print):
    """(model config, params) from config.init.checkpoint, restored straight onto the
    mesh: each process reads only its own shards. cfg.model supplies runtime fields
    (dtype, param_dtype, attention_impl, remat_policy)."""
    from r1v2_jax.convert import load_jax_checkpoint
    from r1v2_jax.convert.orbax_io import read_jax_config
    from r1v2_jax.sharding import param_shardings

    src = str(cfg.init.checkpoint)
    stored = read_jax_config(src)
    config = stored.replace(**runtime_model_fields(cfg))
    shardings = param_shardings(config, mesh, rules)
    config, params = load_jax_checkpoint(src, shardings=shardings, dtype=config.param_dtype)
    config = config.replace(**runtime_model_fields(cfg))
    log(f"loaded {src} onto mesh {dict(mesh.shape)}")
    return config, params


def runtime_model_fields(cfg) -> dict[str, Any]:
    keys = ("dtype", "param_dtype", "attention_impl", "remat_policy")
    return {k: cfg.model[k] for k in keys if "model" in cfg and k in cfg.model}


def load_recipe_tokenizer(cfg) -> tuple[Tokenizer, str]:
    """config.tokenizer, or the checkpoint's own copy when empty -> (tokenizer, its folder)."""
    from r1v2_jax.data.tokenizer import load_tokenizer

    where = str(cfg.tokenizer or cfg.init.checkpoint)
    local = paths.local_copy(where)
    return load_tokenizer(local), where


def prompt_config(model: VLMConfig, tokenizer: Tokenizer, cfg) -> PromptConfig:
    """The checkpoint's chat template when its tokenizer has one (real checkpoints)."""
    system = cfg.data.get("system_prompt", "") or None
    return PromptConfig(system=system, num_image_token=model.num_image_tokens,
                        chat_template=tokenizer.chat_template)


def tiling_of(model: VLMConfig):
    """The checkpoint's own preprocessing facts (the same as `r1v2 generate`)."""
    from r1v2_jax.generate.chat import tiling_for
    return tiling_for(model)


# ----------------------------------------------------------------------------- data
def record_rules(cfg, model: VLMConfig, prompt: PromptConfig, *, completion_budget=None):
    from r1v2_jax.data.records import RecordRules

    return RecordRules(tiling=tiling_of(model), prompt=prompt, on_invalid=cfg.data.on_invalid,
                       max_prompt_tokens=int(cfg.data.max_prompt_tokens),
                       max_completion_tokens=completion_budget)


def open_records(cfg, path: str):
    from r1v2_jax.data.pipeline import open_source

    return open_source(str(path), tfds_data_dir=str(cfg.data.get("tfds_data_dir", "")) or None)


def read_decoded(cfg, path: str, kind: str, rules, tokenizer, prompt, limit: int | None = None,
                 log=print) -> list:
    """Every valid record of `path` (JSONL, `*.parquet`, `tfds:NAME/SPLIT`; local or gs://),
    in file order, checked and decoded by the input pipeline (`data/pipeline`: the same
    rules and messages as `data/records.py`); uid = row index. Held-out sets and `r1v2
    eval` read this way (bounded by a limit); training sets stream (`stream_feed`)."""
    from r1v2_jax.data.pipeline import prevalidate
    from r1v2_jax.data.pipeline.decode import decode
    from r1v2_jax.data.pipeline.validate import check_row

    source = open_records(cfg, path)
    validated = prevalidate(source, kind, rules, tokenizer)
    _log_skips(path, validated, log)
    rows = validated.indices[:limit] if limit else validated.indices
    return [decode(kind, int(i), check_row(source, int(i), kind, rules, tokenizer, gold=False),
                   tokenizer, rules.tiling, prompt) for i in rows]


def _log_skips(path, validated, log) -> None:
    if validated.skipped:
        log(f"{path}: skipped {sum(validated.skipped.values())} invalid record(s): "
            f"{validated.skipped}")


# decoded record -> the trainers' example types (tiles normalised to float32 here)
def _prompt_example(d, tiling):
    from r1v2_jax.data.pipeline import normalize_tiles
    from r1v2_jax.rl.examples import PromptExample

    # a record's `meta` is not a synthetic scene: no hallucination check for real data
    return PromptExample(d.uid, d.prompt_ids, normalize_tiles(d.tiles, tiling), d.question,
                         d.answer, d.answer_type)


def _preference_pair(d, tiling):
    from r1v2_jax.data.pipeline import normalize_tiles
    from r1v2_jax.rl.examples import PromptExample
    from r1v2_jax.rl.pairs import PreferencePair

    return PreferencePair(PromptExample(d.uid, d.prompt_ids, normalize_tiles(d.tiles, tiling),
                                        d.prompt, "", ""),
                          d.chosen_ids, d.rejected_ids, d.chosen_score, d.rejected_score)


def _sft_example(d, tiling):
    from r1v2_jax.data.pipeline import normalize_tiles
    from r1v2_jax.train.sft import SFTExample

    return SFTExample(d.prompt_ids, d.completion_ids, normalize_tiles(d.tiles, tiling))


_TO_EXAMPLE = {"prompt": _prompt_example, "preference": _preference_pair, "sft": _sft_example}


def _rules_for(cfg, model, prompt, kind: str):
    budget = (int(cfg.data.max_response_tokens) or None) if kind == "preference" else None
    return record_rules(cfg, model, prompt, completion_budget=budget)


def read_examples(cfg, model, tokenizer, prompt, path: str, kind: str, *,
                  limit: int | None = None, uid_offset: int = 0, log=print) -> list:
    """`read_decoded` as the trainers' examples (PromptExample, PreferencePair, SFTExample);
    `uid_offset` keeps a second set's uids apart (held-out pairs, offline MPO pairs)."""
    rules = _rules_for(cfg, model, prompt, kind)
    out = []
    for d in read_decoded(cfg, path, kind, rules, tokenizer, prompt, limit, log):
        out.append(_TO_EXAMPLE[kind](dataclasses.replace(d, uid=d.uid + uid_offset), rules.tiling))
    return out


def prompt_examples(cfg, model, tokenizer, prompt, path: str, limit: int | None = None,
                    log=print):
    return read_examples(cfg, model, tokenizer, prompt, path, "prompt", limit=limit, log=log)


def preference_pairs(cfg, model, tokenizer, prompt, path: str, limit: int | None = None,
                     uid_offset: int = 0, log=print):
    return read_examples(cfg, model, tokenizer, prompt, path, "preference", limit=limit,
                         uid_offset=uid_offset, log=log)


def sft_examples(cfg, model, tokenizer, prompt, path: str, limit: int | None = None, log=print):
    return read_examples(cfg, model, tokenizer, prompt, path, "sft", limit=limit, log=log)


def stream_feed(cfg, model, tokenizer, prompt, path: str, kind: str, log=print):
    """The training set of a recipe as a `train.feed.StreamFeed`: records checked before
    step 1 (`prevalidate`), then read, decoded and tiled in `data.num_threads` worker
    threads, at most `data.prefetch` ahead, in the run's seeded order (train.seed, the
    order of the in-memory path). Every host streams the whole global order, as every
    host held the whole list before: the trainers build each step's global batch on each
    host. The shapes come from the prevalidation (longest prompt / completion, most tiles)."""
    from r1v2_jax.data.pipeline import InputPipeline, PipelineConfig, prevalidate
    from r1v2_jax.train.feed import StreamFeed

    d = cfg.data
    # a full decode of every image before step 1 costs as much as an epoch of decoding;
    # without it a corrupt image body is dropped and counted during training instead
    rules = dataclasses.replace(_rules_for(cfg, model, prompt, kind),
                                decode_images=bool(d.get("check_image_bodies", False)))
    source = open_records(cfg, path)
    validated = prevalidate(source, kind, rules, tokenizer)
    _log_skips(path, validated, log)
    pipe = InputPipeline(source, kind, rules, tokenizer, prompt,
                         PipelineConfig(batch_size=1, seed=int(cfg.train.seed),
                                        num_threads=int(d.num_threads),
                                        prefetch_buffer_size=int(d.prefetch)),
                         validated=validated)
    limits = FeedLimits.from_stats(validated.stats)
    log(f"{path}: streaming {len(validated.indices)} {kind} records ({limits})")
    to_example = _TO_EXAMPLE[kind]
    return StreamFeed(pipe, lambda dec: to_example(dec, rules.tiling), limits,
                      cache=int(d.replay_cache))


# ----------------------------------------------------------------------------- scorer
def reward_model_serving(cfg, model, tokenizer, prompt, limits, mesh, rules, log=print):
    """(scorer, calibration) of config.reward.rm_checkpoint (the `final/` of an `rm` run),
    or (None, None) when reward.w_rm == 0. `limits` (train.feed.FeedLimits) of the prompts
    it will score size its batches unless rm.max_seq_len / rm.max_tiles are set."""
    from r1v2_jax.convert.value_head import load_reward_model
    from r1v2_jax.rl.rewards import Calibration
    from r1v2_jax.rl.rm_trainer import JaxRewardModelScorer

    r = cfg.reward
    if float(r.w_rm) == 0.0:
        return None, None
    from r1v2_jax.convert.orbax_io import read_jax_config
    from r1v2_jax.sharding import param_shardings

    src = str(r.rm_checkpoint)
    rm_config = read_jax_config(src).replace(**runtime_model_fields(cfg))
    shardings = param_shardings(rm_config, mesh, rules) if mesh is not None else None
    rm_config, rm_params = load_reward_model(src, dtype=rm_config.param_dtype,
                                             shardings=shardings)  # onto the mesh
    rm_config = rm_config.replace(**runtime_model_fields(cfg))
    cal_file = str(r.rm_calibration or paths.join(src, "calibration.json"))
    calibration = Calibration.from_dict(paths.read_json(cal_file, what="reward.rm_calibration"))
    longest = limits.prompt_tokens
    seq_len = int(cfg.rm.max_seq_len) or -(-(longest + int(cfg.rollout.max_new_tokens) + 1)
                                             // 16) * 16
    max_tiles = int(cfg.rm.max_tiles) or limits.tiles
    scorer = JaxRewardModelScorer(rm_config, rm_params, tokenizer=tokenizer, prompt=prompt,
                                  batch_size=int(cfg.rm.score_batch_size), seq_len=seq_len,
                                  max_tiles=max_tiles)
    log(f"reward model {src}: calibration mean {calibration.mean:.4f} std {calibration.std:.4f}")
    return scorer, calibration


def hybrid_scorer(cfg, model, tokenizer, prompt, limits, mesh=None, rules=None, log=print):
    """The hybrid-reward batch scorer of cfg.reward; `limits`: see reward_model_serving."""
    from r1v2_jax.rl.scoring import make_scorer

    rm, calibration = reward_model_serving(cfg, model, tokenizer, prompt, limits, mesh, rules,
                                           log)
    return make_scorer(cfg.reward, reward_model=rm, calibration=calibration, log=log)


# ----------------------------------------------------------------------------- assembly
def mesh_and_rules(cfg):
    from r1v2_jax.sharding import DEFAULT_RULES, mesh_from_config, rules_from_config

    rules = rules_from_config(cfg.sharding.rules) if "sharding" in cfg else DEFAULT_RULES
    return mesh_from_config(cfg.mesh), rules


def inputs_from_config(cfg, log: Callable[[str], None] = print) -> StageInputs:
    """Validates the recipe (before any model is loaded), then loads checkpoint, tokenizer,
    data and (mpo, grpo) the reward model of the hybrid reward."""
    validate_recipe(cfg)
    stage = str(cfg.stage)
    mesh, rules = mesh_and_rules(cfg)
    tokenizer, tok_dir = load_recipe_tokenizer(cfg)
    model, params = load_policy(cfg, mesh, rules, log)
    if model.image_token_id != tokenizer.img_context_id:
        raise ValueError(f"{cfg.init.checkpoint}: image_token_id {model.image_token_id} != the "
                         f"tokenizer's <IMG_CONTEXT> id {tokenizer.img_context_id} ({tok_dir})")
    prompt = prompt_config(model, tokenizer, cfg)
    d = cfg.data
    held_limit = int(d.num_heldout) or None
    score, offline = None, ()
    kind = {"sft": "sft", "rm": "preference"}.get(stage, "prompt")
    train = stream_feed(cfg, model, tokenizer, prompt, d.train, kind, log)
    if stage == "sft":
        heldout = (prompt_examples(cfg, model, tokenizer, prompt, d.heldout, held_limit, log)
                   if d.heldout else [])
        score = (hybrid_scorer(cfg, model, tokenizer, prompt, limits_of(heldout), log=log)
                 if heldout else None)
    elif stage == "rm":
        heldout = (preference_pairs(cfg, model, tokenizer, prompt, d.heldout, held_limit,
                                    uid_offset=HELDOUT_UID_OFFSET, log=log) if d.heldout else [])
    else:  # mpo, grpo
        heldout = prompt_examples(cfg, model, tokenizer, prompt, d.heldout, held_limit, log)
        both = train.limits.merge(limits_of(heldout))
        score = hybrid_scorer(cfg, model, tokenizer, prompt, both, mesh, rules, log)
        if stage == "mpo" and d.preferences:
            offline = preference_pairs(cfg, model, tokenizer, prompt, d.preferences,
                                       uid_offset=HELDOUT_UID_OFFSET, log=log)
    return StageInputs(model, params, tokenizer, prompt, train, heldout, score, offline,
                       tokenizer_dir=tok_dir, mesh=mesh, rules=rules)
