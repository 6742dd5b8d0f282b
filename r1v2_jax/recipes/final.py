"""`WORKDIR/final/`: the complete model folder every stage ends with.

Layout (what `r1v2_jax.convert.load_jax_checkpoint` reads, and `r1v2 generate --ckpt`,
`r1v2 eval --ckpt`, `r1v2 convert to-hf` and the next stage's `--config.init.checkpoint`
accept):

    final/params/              orbax PyTree, merged parameters in the model's param dtype
    final/model_config.json    written after params/: its presence marks a complete folder
    final/tokenizer*.json ...  the tokenizer the stage trained with (chat template included)
    final/value_head/          reward-model runs only (+ calibration.json: the RM scores'
    final/calibration.json     mean/std that GRPO and MPO standardise with)
"""

from __future__ import annotations

import json
import tempfile
from typing import Callable

import jax
from etils import epath

from r1v2_jax.recipes import paths

FINAL = "final"


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def write_final(workdir: str, inputs, params, *, calibration=None,
                log: Callable[[str], None] = print) -> str:
    """Writes `params` (a policy, or a reward model when `calibration` is given) with the
    stage's tokenizer into WORKDIR/final/, replacing an older one. Returns its path."""
    from r1v2_jax.convert import save_jax_checkpoint
    from r1v2_jax.convert.tokenizer_files import copy_tokenizer_files
    from r1v2_jax.convert.value_head import save_reward_model

    out = paths.join(workdir, FINAL)
    final = epath.Path(out)
    if jax.process_index() == 0:
        if final.exists():
            final.rmtree()
        final.mkdir(parents=True)
        if inputs.tokenizer_dir is not None:
            copy_tokenizer_files(inputs.tokenizer_dir, out)
        else:  # a tokenizer built in memory (the demo's): one tokenizers JSON file
            with tempfile.TemporaryDirectory() as tmp:
                inputs.tokenizer.save(f"{tmp}/tokenizer.json")
                copy_tokenizer_files(f"{tmp}/tokenizer.json", out)
        if calibration is not None:
            paths.write_text_atomic(paths.join(out, "calibration.json"),
                                    json.dumps(calibration.to_dict()))
    _sync("r1v2_final_prepared")
    if calibration is not None:
        save_reward_model(inputs.model, params, out)
    else:
        save_jax_checkpoint(inputs.model, params, out)
    _sync("r1v2_final_written")
    log(f"wrote {out}")
    return out
