"""Typed overrides with ml_collections config_flags semantics: wrong types and unknown keys
are refused at once, naming the key and the expected type."""

import ml_collections
import pytest

from r1v2_jax.train.config_loader import (ConfigError, apply_overrides, split_cli_overrides,
                                          split_config_arg)


def recipe():
    return ml_collections.ConfigDict(dict(
        ssb=dict(enabled=True, alpha=0.7), optim=dict(lr=3e-6, warmup_steps=7),
        mpo=dict(weights=(0.6, 0.3, 0.9), optim=dict()), grpo=dict(dual_clip=None),
        data=dict(train="/x.jsonl")))


@pytest.mark.parametrize("text,value", [("false", False), ("False", False), ("0", False),
                                        ("true", True), ("yes", True)])
def test_bool_fields_parse_words(text, value):
    cfg = apply_overrides(recipe(), [f"--config.ssb.enabled={text}"])
    assert cfg.ssb.enabled is value


def test_numbers_tuples_strings_and_optional_fields():
    cfg = apply_overrides(recipe(), ["--config.optim.lr=1e-4", "--config.optim.warmup_steps=12",
                                     "--config.mpo.weights=(1, 2, 3)", "--config.data.train=a b",
                                     "--config.grpo.dual_clip=3.0", "config.ssb.alpha=2"])
    assert cfg.optim.lr == 1e-4 and cfg.optim.warmup_steps == 12
    assert cfg.mpo.weights == (1, 2, 3) and cfg.data.train == "a b"
    assert cfg.grpo.dual_clip == 3.0 and cfg.ssb.alpha == 2.0 and isinstance(cfg.ssb.alpha, float)


@pytest.mark.parametrize("item,message", [
    ("--config.optim.lr=abc", "config.optim.lr: expected a float, got 'abc'"),
    ("--config.optim.lr=nan", "config.optim.lr: expected a finite float"),
    ("--config.optim.warmup_steps=2.5", "config.optim.warmup_steps: expected an int"),
    ("--config.ssb.enabled=maybe", "config.ssb.enabled: expected a bool"),
    ("--config.mpo.weights=0.5", "config.mpo.weights: expected a tuple"),
    ("--config.optim.lrr=1", r"config.optim.lrr: no such field; config.optim has \['lr'"),
    ("--config.nope.x=1", "config.nope.x: no such field"),
    ("--config.optim.lr", "must look like --config.key=value"),
])
def test_bad_overrides_are_refused_naming_the_key(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(recipe(), [item])


def test_cli_tail_and_config_argument():
    assert split_cli_overrides(["--config.a=1", "--config.b", "2"]) == ["--config.a=1",
                                                                         "--config.b=2"]
    with pytest.raises(ConfigError, match="unrecognised argument 'config.a=1'"):
        split_cli_overrides(["config.a=1"])
    assert split_config_arg("configs/grpo_38b.py:smoke") == ("configs/grpo_38b.py", "smoke")
    assert split_config_arg("configs/grpo_38b.py") == ("configs/grpo_38b.py", None)
