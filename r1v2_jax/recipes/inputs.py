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


@dataclasses.dataclass
class StageInputs:
    model: VLMConfig
    params: Any  # full parameter tree, already on the mesh when `mesh` is set
    tokenizer: Tokenizer
    prompt: PromptConfig
    train: Sequence[Any]  # PromptExample (mpo, grpo), SFTExample (sft), PreferencePair (rm)
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


def read_decoded(path: str, kind: str, rules, tokenizer, prompt, limit: int | None = None,
                 log=print) -> list:
    """Every valid record of `path` (JSONL, `*.parquet`, `tfds:NAME/SPLIT`; local or gs://),
    in file order, checked, decoded and tiled by the input pipeline (`data/pipeline`: the
    same rules and messages as `data/records.py`), with float32 tiles. Invalid records are
    an error naming file:line, or counted skips with data.on_invalid=skip."""
    from r1v2_jax.data.pipeline import normalize_tiles, open_source, prevalidate
    from r1v2_jax.data.pipeline.decode import decode
    from r1v2_jax.data.pipeline.validate import check_row

    source = open_source(str(path))
    validated = prevalidate(source, kind, rules, tokenizer)
    if validated.skipped:
        log(f"{path}: skipped {sum(validated.skipped.values())} invalid record(s): "
            f"{validated.skipped}")
    rows = validated.indices[:limit] if limit else validated.indices
    out = []
    for uid, i in enumerate(rows):
        d = decode(kind, uid, check_row(source, int(i), kind, rules, tokenizer, gold=False),
                   tokenizer, rules.tiling, prompt)
        out.append((d, normalize_tiles(d.tiles, rules.tiling)))
    return out


def prompt_examples(cfg, model, tokenizer, prompt, path: str, limit: int | None = None,
                    log=print):
    from r1v2_jax.rl.examples import PromptExample

    rules = record_rules(cfg, model, prompt)
    # a record's `meta` is not a synthetic scene: no hallucination check for real data
    return [PromptExample(d.uid, d.prompt_ids, px, d.question, d.answer, d.answer_type)
            for d, px in read_decoded(path, "prompt", rules, tokenizer, prompt, limit, log)]


def preference_pairs(cfg, model, tokenizer, prompt, path: str, limit: int | None = None,
                     uid_offset: int = 0, log=print):
    from r1v2_jax.rl.examples import PromptExample
    from r1v2_jax.rl.pairs import PreferencePair

    rules = record_rules(cfg, model, prompt,
                         completion_budget=int(cfg.data.max_response_tokens) or None)
    return [PreferencePair(PromptExample(uid_offset + d.uid, d.prompt_ids, px, d.prompt, "", ""),
                           d.chosen_ids, d.rejected_ids, d.chosen_score, d.rejected_score)
            for d, px in read_decoded(path, "preference", rules, tokenizer, prompt, limit, log)]


def sft_examples(cfg, model, tokenizer, prompt, path: str, limit: int | None = None, log=print):
    from r1v2_jax.train.sft import SFTExample

    rules = record_rules(cfg, model, prompt)
    return [SFTExample(d.prompt_ids, d.completion_ids, px)
            for d, px in read_decoded(path, "sft", rules, tokenizer, prompt, limit, log)]


# ----------------------------------------------------------------------------- scorer
def reward_model_serving(cfg, model, tokenizer, prompt, examples, mesh, rules, log=print):
    """(scorer, calibration) of config.reward.rm_checkpoint (the `final/` of an `rm` run),
    or (None, None) when reward.w_rm == 0."""
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
    longest = max(len(e.prompt_ids) for e in examples)
    seq_len = int(cfg.rm.max_seq_len) or -(-(longest + int(cfg.rollout.max_new_tokens) + 1)
                                             // 16) * 16
    max_tiles = int(cfg.rm.max_tiles) or max(len(e.pixel_values) for e in examples)
    scorer = JaxRewardModelScorer(rm_config, rm_params, tokenizer=tokenizer, prompt=prompt,
                                  batch_size=int(cfg.rm.score_batch_size), seq_len=seq_len,
                                  max_tiles=max_tiles)
    log(f"reward model {src}: calibration mean {calibration.mean:.4f} std {calibration.std:.4f}")
    return scorer, calibration


def hybrid_scorer(cfg, model, tokenizer, prompt, examples, mesh=None, rules=None, log=print):
    from r1v2_jax.rl.scoring import make_scorer

    rm, calibration = reward_model_serving(cfg, model, tokenizer, prompt, examples, mesh, rules,
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
    if stage == "sft":
        train = sft_examples(cfg, model, tokenizer, prompt, d.train, log=log)
        heldout = (prompt_examples(cfg, model, tokenizer, prompt, d.heldout, held_limit, log)
                   if d.heldout else [])
        score = hybrid_scorer(cfg, model, tokenizer, prompt, heldout or [], log=log) \
            if heldout else None
    elif stage == "rm":
        train = preference_pairs(cfg, model, tokenizer, prompt, d.train, log=log)
        heldout = (preference_pairs(cfg, model, tokenizer, prompt, d.heldout, held_limit,
                                    uid_offset=10**9, log=log) if d.heldout else [])
    else:  # mpo, grpo
        train = prompt_examples(cfg, model, tokenizer, prompt, d.train, log=log)
        heldout = prompt_examples(cfg, model, tokenizer, prompt, d.heldout, held_limit, log)
        score = hybrid_scorer(cfg, model, tokenizer, prompt, list(train) + list(heldout), mesh,
                              rules, log)
        if stage == "mpo" and d.preferences:
            offline = preference_pairs(cfg, model, tokenizer, prompt, d.preferences,
                                       uid_offset=10**9, log=log)
    if not train:
        raise ValueError(f"config.data.train: {d.train} holds no usable record")
    return StageInputs(model, params, tokenizer, prompt, train, heldout, score, offline,
                       tokenizer_dir=tok_dir, mesh=mesh, rules=rules)
