"""The loss functions' keyword defaults are the recipe's (configs/grpo_base.py `grpo`
section, the plain GRPO loss): calling `grpo_loss` without options is what the recipe
trains with by default.  The recipe passes every option explicitly, so nothing else would
notice a default drifting."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest

from r1v2_jax.losses import grpo_loss, grpo_loss_terms

_BASE = Path(__file__).resolve().parents[2] / "configs" / "grpo_base.py"


def _recipe_grpo():
    spec = importlib.util.spec_from_file_location("grpo_base", _BASE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.grpo_recipe().grpo


@pytest.mark.parametrize("fn", [grpo_loss_terms, grpo_loss])
def test_loss_defaults_are_the_recipe_defaults(fn):
    recipe = _recipe_grpo()
    shared = {name: p.default for name, p in inspect.signature(fn).parameters.items()
              if p.default is not inspect.Parameter.empty and name in recipe}
    assert len(shared) >= (14 if fn is grpo_loss_terms else 6)
    for name, default in shared.items():
        assert default == recipe[name], name
