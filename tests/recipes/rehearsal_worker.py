"""The production path on a tiny checkpoint, the way a pod runs it (run by
tests/recipes/test_rehearsal.py in a subprocess with 8 simulated CPU devices):

  release (layout A + Qwen2-style tokenizer) -> r1v2 convert to-jax
  -> r1v2 train sft -> rm -> mpo (with the reward model) -> grpo (with the reward model),
     each with the shipped 38B recipe at `:smoke`, on the recipe's own mesh
  -> every stage killed once after step 1 and resumed: same final parameters
  -> r1v2 convert to-hf -> transformers + AutoProcessor load it, logits equal the JAX model's
  -> r1v2 eval

Writes results.json into --out; the test asserts on it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

STAGES = (  # stage, recipe, what its init.checkpoint is
    ("sft", "configs/sft_38b.py:smoke"),
    ("rm", "configs/rm_38b.py:smoke"),
    ("mpo", "configs/mpo_38b.py:smoke"),
    ("grpo", "configs/grpo_38b.py:smoke"),
)


def write_data(folder: Path) -> dict[str, str]:
    """Images of three sizes (1, 3 and more tiles), prompt / SFT / preference records."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = {"a.png": (28, 28), "b.png": (84, 28), "c.png": (56, 56)}
    for name, (w, h) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(folder / name)
    prompts = [
        {"images": ["a.png"], "question": "How many dots are there?", "answer": "3",
         "answer_type": "number"},
        {"images": ["b.png"], "question": "<image>\nWhich box is red? (A) left (B) right",
         "answer": "B", "answer_type": "choice"},
        {"question": "What is 2 + 5?", "answer": "7", "answer_type": "number"},
        {"images": ["c.png"], "question": "Count the squares.", "answer": "4",
         "answer_type": "number"},
    ]
    response = "<think>\ncount them: one, two, three.\n</think>\n\nThe answer is \\boxed{3}."
    sft = [{"images": p.get("images", []), "question": p["question"],
            "response": response.replace("3", p["answer"])} for p in prompts]
    prefs = [{"images": p.get("images", []), "prompt": p["question"],
              "chosen": response.replace("3", p["answer"]),
              "rejected": response.replace("3", "9")} for p in prompts]
    files = {"prompts": prompts, "heldout": prompts[:2], "sft": sft, "prefs": prefs}
    out = {}
    for name, rows in files.items():
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out[name] = str(path)
    return out


def train_args(stage: str, recipe: str, workdir: Path, init: str, data: dict, rm: str | None):
    args = ["train", "--config", str(ROOT / recipe), "--workdir", str(workdir),
            f"--config.init.checkpoint={init}"]
    if stage == "sft":
        args += [f"--config.data.train={data['sft']}", f"--config.data.heldout={data['heldout']}"]
    elif stage == "rm":
        args += [f"--config.data.train={data['prefs']}", f"--config.data.heldout={data['prefs']}"]
    else:
        args += [f"--config.data.train={data['prompts']}",
                 f"--config.data.heldout={data['heldout']}",
                 f"--config.reward.rm_checkpoint={rm}"]
        if stage == "mpo":
            args.append(f"--config.data.preferences={data['prefs']}")
    return args


def flat_params(folder: str) -> dict[str, np.ndarray]:
    from r1v2_jax.convert import load_jax_checkpoint
    from r1v2_jax.convert.mapping import flatten

    _, params = load_jax_checkpoint(folder)
    return {"/".join(k): np.asarray(v) for k, v in flatten(params).items()}


def _option(args: list[str], name: str) -> str:
    """The value of `name` given as `name VALUE` or `name=VALUE`."""
    for i, a in enumerate(args):
        if a == name:
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    raise KeyError(name)


def _with_option(args: list[str], name: str, value: str) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out + [name, value]


def killed_and_resumed(args: list[str], workdir: Path) -> str:
    """The same command, interrupted after one step (a crash), then run again: resumes."""
    from r1v2_jax.recipes import STAGES as RECIPES
    from r1v2_jax.recipes import inputs_from_config
    from r1v2_jax.recipes.cli import load_recipe
    from r1v2_jax.recipes.mpo import mpo_stage_config
    from r1v2_jax.train.config_loader import split_cli_overrides

    args = _with_option(args, "--workdir", str(workdir))
    cfg = load_recipe(_option(args, "--config"),
                      split_cli_overrides([a for a in args if a.startswith("--config.")]))
    if cfg.stage == "mpo":
        cfg = mpo_stage_config(cfg)
    partial = RECIPES[cfg.stage](cfg, inputs_from_config(cfg), str(workdir), stop_after=1)
    assert partial.final_dir == "" and partial.trainer.step == 1, partial
    from r1v2_jax.cli import main as cli
    assert cli(args) == 0
    return str(workdir / "final")


def hf_logits_match(hf_dir: str, jax_dir: str, image: str) -> dict:
    import jax.numpy as jnp
    import torch
    from transformers import AutoProcessor, InternVLForConditionalGeneration

    from r1v2_jax.convert import load_jax_checkpoint
    from r1v2_jax.models import VLM

    try:
        import torchvision  # noqa: F401
    except ImportError:  # InternVLProcessor builds a video processor, which needs
        # torchvision; the CPU torch here has none that loads: leave the video part out
        from transformers import ProcessorMixin
        from transformers.models.auto import video_processing_auto

        check = ProcessorMixin.check_argument_for_proper_class
        video_processing_auto.AutoVideoProcessor.from_pretrained = classmethod(
            lambda cls, *a, **k: None)
        ProcessorMixin.check_argument_for_proper_class = (
            lambda self, name, arg: None if name == "video_processor" and arg is None
            else check(self, name, arg))
    processor = AutoProcessor.from_pretrained(hf_dir, backend="pil")
    model = InternVLForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32).eval()
    # the checkpoint's chat template (the tokenizer's); the processor expands the image token
    messages = [{"role": "user", "content": f"{processor.image_token}\nHow many dots?"}]
    text = processor.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                   tokenize=False)
    inputs = processor(text=[text], images=[Image.open(image)], return_tensors="pt")
    with torch.no_grad():
        ref = model(**inputs).logits.numpy()
    config, params = load_jax_checkpoint(jax_dir)
    pixels = jnp.asarray(inputs["pixel_values"].numpy().transpose(0, 2, 3, 1))
    ours = np.asarray(VLM(config).apply({"params": params}, jnp.asarray(inputs["input_ids"].numpy()),
                                        pixels).logits)
    return {"max_abs_logit_diff": float(np.abs(ours - ref).max()),
            "num_image_tokens": int((inputs["input_ids"] == config.image_token_id).sum()),
            "num_tiles": int(inputs["pixel_values"].shape[0])}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--commands", default="", help="JSON file: stage -> the `r1v2` argv the "
                   "launch script's --dry-run runs on a worker ({workdir}, {init}, {rm} and "
                   "data placeholders), used instead of this worker's own")
    a = p.parse_args()
    out = Path(a.out)
    from tests.hf_fixtures import make_tiny_release

    import jax
    from r1v2_jax.cli import main as cli

    results: dict = {"devices": jax.device_count()}
    release = make_tiny_release(out / "release")
    data = write_data(out / "data")
    jax_dir = out / "r1v2-tiny-jax"
    assert cli(["convert", "to-jax", str(release), str(jax_dir), "--dtype", "float32"]) == 0
    launch = json.loads(Path(a.commands).read_text()) if a.commands else {}
    init, rm, finals = str(jax_dir), None, {}
    for stage, recipe in STAGES:
        workdir = out / "runs" / stage
        args = train_args(stage, recipe, workdir, init, data, rm)
        if stage in launch:  # the launch script's own worker command for this stage
            fields = {"workdir": workdir, "init": init, "rm": rm, **data}
            args = [a.format(**fields) for a in launch[stage]]
        assert cli(args) == 0, (stage, args)
        finals[stage] = str(workdir / "final")
        metrics = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
        results[stage] = {"steps": max(m.get("step", 0) for m in metrics),
                          "keys": sorted({k for m in metrics for k in m})}
        resumed = killed_and_resumed(args, out / "runs" / f"{stage}_resumed")
        a_, b_ = flat_params(finals[stage]), flat_params(resumed)
        results[stage]["resume_max_diff"] = max(float(np.abs(a_[k] - b_[k]).max()) for k in a_)
        results[stage]["resume_same_keys"] = sorted(a_) == sorted(b_)
        if stage == "rm":
            rm = finals[stage]
        else:
            init = finals[stage]
    hf_dir = out / "r1v2-tiny-hf"
    assert cli(["convert", "to-hf", finals["grpo"], str(hf_dir), "--layout", "hf"]) == 0
    results["hf"] = hf_logits_match(str(hf_dir), finals["grpo"], str(out / "data" / "b.png"))
    assert cli(["eval", "--ckpt", finals["grpo"], "--data", data["heldout"], "--k", "2",
                "--out", str(out / "eval"), "--config.rollout.max_new_tokens=8"]) == 0
    results["eval"] = json.loads((out / "eval" / "summary.json").read_text())
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
