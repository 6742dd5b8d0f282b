"""Shared fixtures of the pipeline tests: the same records as JSONL (+ image files), as a
Hugging Face-style parquet export (converted to the pipeline's parquet) and as TFDS."""

import io
import json

import numpy as np
from PIL import Image

from r1v2_jax.data import records as R
from r1v2_jax.data import synthetic as S
from r1v2_jax.data.image import TilingConfig
from r1v2_jax.data.prompts import PromptConfig
from r1v2_jax.data.tokenizer import build_demo_tokenizer

TILING = TilingConfig(image_size=28, max_num=4)
PROMPT = PromptConfig(num_image_token=3, system="Be brief.")
RULES = R.RecordRules(tiling=TILING, prompt=PROMPT, max_prompt_tokens=200, decode_images=False)
TOKENIZER = build_demo_tokenizer(S.vocabulary())
SIZES = [(56, 56), (56, 28), (28, 28), (40, 90), (84, 28), (30, 50), (70, 70)]
ANSWERS = [("2", "number"), ("B", "choice"), ("red", "text"), ("\\frac{1}{2}", "math"),
           ("3", "number"), ("A", "choice"), ("7", "number")]


def png(i: int, size) -> bytes:
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def hf_rows():
    """Rows as a HF VLM reasoning set has them: an `image` struct, problem, solution."""
    return [{"image": {"bytes": png(i, s), "path": None},
             "problem": f"How many red shapes are there? ({i})", "solution": a,
             "kind": t, "src": f"set{i % 2}"}
            for i, (s, (a, t)) in enumerate(zip(SIZES, ANSWERS))]


def write_hf_parquet(folder):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rows = hf_rows()
    pq.write_table(pa.Table.from_pylist(rows[:4]), folder / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[4:]), folder / "train-00001-of-00002.parquet")
    return folder


def record_dicts():
    return [{"images": [png(i, s)], "question": f"How many red shapes are there? ({i})",
             "answer": a, "answer_type": t, "meta": {"src": f"set{i % 2}"}}
            for i, (s, (a, t)) in enumerate(zip(SIZES, ANSWERS))]


def write_jsonl(path, rows):
    """Rows: dicts (images as bytes are written beside the file) or raw lines."""
    (path.parent / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, r in enumerate(rows):
        if isinstance(r, str):
            lines.append(r)
            continue
        r = dict(r)
        if r.get("images") and isinstance(r["images"][0], bytes):
            names = []
            for k, data in enumerate(r["images"]):
                (path.parent / "img" / f"{i}_{k}.png").write_bytes(data)
                names.append(f"img/{i}_{k}.png")
            r["images"] = names
        lines.append(json.dumps(r))
    path.write_text("".join(line + "\n" for line in lines))
    return path


def write_tfds(data_dir, rows, name="r1v2_pipeline_test"):
    """An array_record TFDS data set of prompt records (built without TensorFlow)."""
    import tensorflow_datasets as tfds

    features = tfds.features.FeaturesDict({
        "images": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),
        "question": tfds.features.Text(), "answer": tfds.features.Text(),
        "answer_type": tfds.features.Text(), "meta": tfds.features.Text()})

    class PipelineTestBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):  # keep the rows' order: the test compares sources row by row
            return tfds.core.DatasetInfo(builder=self, features=features,
                                         disable_shuffling=True)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, r in enumerate(rows):
                yield i, {**r, "meta": json.dumps(r["meta"])}

    PipelineTestBuilder.name = name
    PipelineTestBuilder(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return f"tfds:{name}/train"
