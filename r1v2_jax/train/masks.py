"""Which parts of the model train. The paper's best setting trains the adapter only.

Training is split at the top level of the parameter tree: the trainable parts get
gradients and optimizer state; frozen parts are closed over as constants (no gradient
memory, no optimizer memory), and the reference policy reuses them as they are.
"""

from __future__ import annotations

from typing import Any

TRAINABLE_PARTS = {
    "adapter": ("adapter",),
    "llm+adapter": ("text", "adapter"),
    "vit+adapter": ("vision", "adapter"),
    "all": ("vision", "adapter", "text"),
}


def trainable_parts(name: str) -> tuple[str, ...]:
    if name not in TRAINABLE_PARTS:
        raise ValueError(f"train.trainable must be one of {sorted(TRAINABLE_PARTS)}, got {name!r}")
    return TRAINABLE_PARTS[name]


def split_params(params: dict[str, Any], parts: tuple[str, ...]) -> tuple[dict, dict]:
    """params -> (trainable, frozen), both sub-dicts of the top-level tree."""
    missing = [p for p in parts if p not in params]
    if missing:
        raise KeyError(f"parameter tree has no part(s) {missing}; has {sorted(params)}")
    trainable = {k: v for k, v in params.items() if k in parts}
    frozen = {k: v for k, v in params.items() if k not in parts}
    return trainable, frozen


def merge_params(trainable: dict[str, Any], frozen: dict[str, Any]) -> dict[str, Any]:
    return {**frozen, **trainable}
