"""Argument checks shared by the loss functions.

Shapes and options are static under `jax.jit`, so every check here runs once at trace
time and raises a ValueError that names the function and the offending argument.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


def check_choice(fn: str, name: str, value: Any, choices: Collection[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{fn}: {name}={value!r} is not one of {sorted(choices)}")


def check_static_float(fn: str, name: str, value: Any) -> float:
    """Options that select code paths or set bounds must be Python numbers, not arrays."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"{fn}: {name} must be a Python float (a static option), got {type(value).__name__}"
        )
    return float(value)


def check_ndim(fn: str, name: str, x: Any, ndim: int) -> None:
    if x.ndim != ndim:
        raise ValueError(f"{fn}: {name} must have {ndim} dims, got shape {tuple(x.shape)}")


def check_shape(fn: str, name: str, x: Any, shape: tuple[int, ...]) -> None:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
