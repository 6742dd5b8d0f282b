"""Accelerator peaks used to turn FLOPs and bytes into times (vendor figures, dense bf16)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    bf16_flops: float  # FLOP/s, dense (no sparsity)
    hbm_bytes: float  # bytes of HBM per chip (vendor GB = 1e9)
    hbm_bandwidth: float  # bytes/s


CHIPS = {
    "v5p": Chip("TPU v5p", 459e12, 95e9, 2765e9),
    "v5e": Chip("TPU v5e", 197e12, 16e9, 819e9),
    "h100": Chip("NVIDIA H100 SXM", 989e12, 80e9, 3350e9),
    "h200": Chip("NVIDIA H200", 989e12, 141e9, 4800e9),
}


def get_chip(name: str) -> Chip:
    if name not in CHIPS:
        raise ValueError(f"unknown chip {name!r}; known: {sorted(CHIPS)}")
    return CHIPS[name]


def chip_for_device_kind(kind: str) -> Chip | None:
    """The table entry of a JAX `device_kind` ("TPU v5p", "NVIDIA H100 80GB HBM3", ...)."""
    kind = kind.lower().replace(" ", "")
    for key in ("v5p", "v5e", "v5lite", "h100", "h200"):
        if key in kind:
            return CHIPS["v5e" if key == "v5lite" else key]
    return None
