"""The shapes `r1v2 bench` sweeps: small named points along each axis a user may change.

Train points vary one thing at a time from `t-base` (model width and depth, GQA ratio,
sequence length 256-4096, image tiles 0-3, batch); generation points vary from `g-base`
(new tokens 32-512, batch, an image tile, width). Text-only points carry a token vision
tower (unused), so the optimizer's work is the LM's on every side; they are the points
where Tunix (an LM library) runs too. Sizes are chosen so the whole default sweep runs in
under ~10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses

from r1v2_jax.generate.bench import BenchModel
from r1v2_jax.tools.bench_train import TrainBenchModel


@dataclasses.dataclass(frozen=True)
class TrainShape:
    name: str
    model: TrainBenchModel
    batch: int
    seq_len: int
    tiles: int = 0  # image tiles per sequence; 0 = text only (Tunix runs too)


@dataclasses.dataclass(frozen=True)
class GenShape:
    name: str
    model: BenchModel
    batch: int
    new_tokens: int
    prompt_len: int = 32  # text tokens (+ the tiles' placeholders)
    tiles: int = 0  # image tiles per prompt; 0 = text only (Tunix runs too)


# An LM with a token vision tower (text-only points).
LM = TrainBenchModel(vision_hidden=32, vision_layers=1, vision_heads=2, vision_intermediate=64,
                     image_size=28, patch_size=7, hidden=256, layers=4, heads=8, kv_heads=2,
                     intermediate=1024, vocab=8192)
# The same LM with a small InternViT (224 px tiles, 64 image tokens each).
VLM = dataclasses.replace(LM, vision_hidden=128, vision_layers=2, vision_heads=4,
                          vision_intermediate=512, image_size=224, patch_size=14)

TRAIN_SHAPES = (
    TrainShape("t-base", LM, batch=4, seq_len=512),
    TrainShape("t-wide", dataclasses.replace(LM, hidden=512, layers=2, intermediate=2048),
               batch=4, seq_len=512),
    TrainShape("t-deep", dataclasses.replace(LM, hidden=128, heads=4, layers=8,
                                             intermediate=512), batch=4, seq_len=512),
    TrainShape("t-mha", dataclasses.replace(LM, kv_heads=8), batch=4, seq_len=512),
    TrainShape("t-gqa8", dataclasses.replace(LM, kv_heads=1), batch=4, seq_len=512),
    TrainShape("t-seq256", LM, batch=8, seq_len=256),
    TrainShape("t-seq2048", LM, batch=1, seq_len=2048),
    # Two layers of four heads: Tunix stores every layer's [H, T, T] fp32 scores for the
    # backward pass (~3 GB at 8 heads x 4 layers), too much for a shared small machine.
    TrainShape("t-seq4096", dataclasses.replace(LM, layers=2, heads=4), batch=1, seq_len=4096),
    TrainShape("t-batch1", LM, batch=1, seq_len=512),
    TrainShape("t-batch16", LM, batch=16, seq_len=256),
    TrainShape("t-tiles1", VLM, batch=4, seq_len=256, tiles=1),
    TrainShape("t-tiles3", VLM, batch=2, seq_len=512, tiles=3),
)

GEN = BenchModel()  # E=128, 4 layers, V=4096, a 28 px tile = 4 image tokens
GEN_SHAPES = (
    GenShape("g-base", GEN, batch=8, new_tokens=128),
    GenShape("g-new32", GEN, batch=8, new_tokens=32),
    GenShape("g-new512", GEN, batch=8, new_tokens=512),
    GenShape("g-batch1", GEN, batch=1, new_tokens=128),
    GenShape("g-batch32", GEN, batch=32, new_tokens=128),
    GenShape("g-tiles1", GEN, batch=8, new_tokens=64, tiles=1),
    GenShape("g-wide", dataclasses.replace(GEN, hidden_size=512, intermediate_size=2048,
                                           num_attention_heads=8), batch=8, new_tokens=128),
)


def select(names: str | None, train=TRAIN_SHAPES, gen=GEN_SHAPES):
    """(train shapes, generation shapes) named in the comma-separated `names` (None: all).
    A name is a point ("t-seq4096"), or "train" / "gen" for all points of that kind."""
    if names is None:
        return tuple(train), tuple(gen)
    known = {s.name: s for s in (*train, *gen)}
    picked = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name == "train":
            picked += train
        elif name == "gen":
            picked += gen
        elif name in known:
            picked.append(known[name])
        else:
            raise ValueError(f"--shapes: unknown point {name!r}; known: train, gen, "
                             f"{', '.join(known)}")
    picked = list(dict.fromkeys(picked))
    return (tuple(s for s in picked if isinstance(s, TrainShape)),
            tuple(s for s in picked if isinstance(s, GenShape)))
