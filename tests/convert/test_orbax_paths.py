"""JAX checkpoint folders with relative paths, and failed saves that leave nothing behind."""

import numpy as np
import pytest

from r1v2_jax.convert import ConversionError, convert_to_hf, load_jax_checkpoint, save_jax_checkpoint
from r1v2_jax.convert.mapping import flatten, unflatten
from r1v2_jax.convert.orbax_io import as_abs_path
from r1v2_jax.convert.value_head import load_reward_model, save_reward_model
from r1v2_jax.models.reward_model import VALUE_HEAD
from tests.generate.conftest import random_params, tiny_config


def _same(a: dict, b: dict) -> None:
    fa, fb = flatten(a), flatten(b)
    assert sorted(fa) == sorted(fb)
    for key in fa:
        np.testing.assert_array_equal(np.asarray(fa[key]), np.asarray(fb[key]), err_msg=str(key))


def _poisoned(params: dict) -> dict:
    """A tree orbax starts writing and then fails on (TensorStore has no object dtype)."""
    flat = flatten(params)
    key = sorted(flat)[len(flat) // 2]
    flat[key] = np.empty(flat[key].shape, dtype=object)
    return unflatten(flat)


def _tree(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_relative_paths_save_load_and_convert(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config()
    params = random_params(config, seed=3)
    save_jax_checkpoint(config, params, "runs/ckpt")
    assert (tmp_path / "runs/ckpt/params").is_dir()
    loaded_config, loaded = load_jax_checkpoint("runs/ckpt")
    assert loaded_config == config
    _same(params, loaded)
    out = convert_to_hf("runs/ckpt", "runs/hf", "hf")
    assert (tmp_path / "runs/hf/config.json").is_file() and not out.is_absolute()
    head = {"kernel": np.arange(32, dtype=np.float32).reshape(32, 1) / 7, "bias": np.ones(1)}
    save_reward_model(config, {**params, VALUE_HEAD: head}, "runs/rm")
    _, rm = load_reward_model("runs/rm")
    _same({**params, VALUE_HEAD: head}, rm)


def test_as_abs_path_keeps_remote_paths():
    assert str(as_abs_path("gs://bucket/run/final")) == "gs://bucket/run/final"
    assert as_abs_path("a/b").is_absolute()


# orbax's writer threads report the planted failure once more after the save has raised
QUIET = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@QUIET
def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config()
    params = random_params(config)
    with pytest.raises(ValueError, match="object"):
        save_jax_checkpoint(config, _poisoned(params), "new/ckpt")
    assert _tree(tmp_path) == ["new"]  # parents stay; the folder this call made does not
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing/notes.txt").write_text("kept")
    with pytest.raises(ValueError, match="object"):
        save_jax_checkpoint(config, _poisoned(params), "existing")
    assert _tree(tmp_path) == ["existing", "existing/notes.txt", "new"]


@QUIET
def test_failed_save_cleans_up_when_a_late_write_races_the_removal(tmp_path, monkeypatch):
    """orbax's writer threads can add a file to the temporary folder while it is being
    removed ("Directory not empty"): the clean-up retries instead of raising that."""
    import errno

    from etils import epath

    path_type = type(epath.Path(tmp_path))
    rmtree = path_type.rmtree
    calls = []

    def racing_rmtree(self, *args, **kwargs):
        calls.append(self.name)
        if len(calls) == 1:
            raise OSError(errno.ENOTEMPTY, "Directory not empty", str(self))
        return rmtree(self, *args, **kwargs)

    monkeypatch.setattr(path_type, "rmtree", racing_rmtree)
    monkeypatch.chdir(tmp_path)
    config = tiny_config()
    with pytest.raises(ValueError, match="object"):
        save_jax_checkpoint(config, _poisoned(random_params(config)), "new/ckpt")
    assert len(calls) >= 2 and calls[0].startswith("params.orbax-checkpoint-tmp")
    assert _tree(tmp_path) == ["new"]


@QUIET
def test_failed_reward_model_save_leaves_no_backbone(tmp_path):
    config = tiny_config()
    params = random_params(config)
    bad_head = {"kernel": np.empty((32, 1), dtype=object), "bias": np.zeros(1, np.float32)}
    (tmp_path / "rm").mkdir()
    with pytest.raises(ValueError, match="object"):
        save_reward_model(config, {**params, VALUE_HEAD: bad_head}, tmp_path / "rm")
    assert _tree(tmp_path) == ["rm"]
    with pytest.raises(ValueError, match="object"):
        save_reward_model(config, {**params, VALUE_HEAD: bad_head}, tmp_path / "new/rm")
    assert _tree(tmp_path) == ["new", "rm"]
    save_jax_checkpoint(config, params, tmp_path / "vlm")
    with pytest.raises(ConversionError, match="already exists"):
        save_jax_checkpoint(config, params, tmp_path / "vlm")
