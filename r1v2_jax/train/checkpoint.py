"""Training checkpoints with orbax: async saves every N steps, keep the last K, automatic
resume from the newest complete checkpoint in the work folder.

A checkpoint holds two items:
  state  the device pytree (trainable params, optimizer state, step, RNG key, MPO delta...),
         restored straight into the shardings of a template;
  host   JSON: data position, SSB buffer, anything host-side (numpy arrays encoded).
orbax writes into a temporary folder and renames it when complete, so a run killed during a
write resumes from the previous checkpoint. `directory` may be local or a bucket
(`gs://...`): every process of a multi-host run calls save/restore with the same folder.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from r1v2_jax.train.host_state import decode_tree, encode_tree


class Checkpointer:
    def __init__(self, directory: str, *, save_every: int, keep: int, async_save: bool = True):
        self.save_every = int(save_every)
        self.directory = directory
        options = ocp.CheckpointManagerOptions(
            max_to_keep=int(keep), enable_async_checkpointing=async_save, create=True)
        path = epath.Path(directory)
        if "://" not in str(directory):  # orbax wants absolute local paths; buckets as given
            path = epath.Path(os.path.abspath(directory))
        self.manager = ocp.CheckpointManager(path, options=options,
                                             item_names=("state", "host"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of the complete checkpoints, newest first."""
        return sorted(self.manager.all_steps(), reverse=True)

    def should_save(self, step: int) -> bool:
        return self.save_every > 0 and step % self.save_every == 0

    def save(self, step: int, state: Any, host: dict[str, Any], *, force: bool = False) -> bool:
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(encode_tree(host))), force=force)

    def restore(self, step: int, state_template: Any) -> tuple[Any, dict[str, Any]]:
        """state_template: a pytree of arrays or jax.ShapeDtypeStruct (with shardings)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), host=ocp.args.JsonRestore()))
        return out.state, decode_tree(out.host)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
