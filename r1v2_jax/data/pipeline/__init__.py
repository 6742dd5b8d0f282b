"""A streaming input pipeline on `grain`: records are read, checked, decoded, tiled and
tokenised one at a time in worker threads instead of all up front (docs/data.md).

    sources.py   the project's JSONL, parquet (HF `datasets` exports) and TFDS as rows
    validate.py  a row -> a checked record view (records.py's rules and messages)
    order.py     the seeded global order, identical on every host, and each host's share
    decode.py    a record view -> token ids and uint8 tiles (images decoded here)
    loader.py    the grain dataset, its iterator and resumable state
"""

from r1v2_jax.data.pipeline.decode import (DecodedPreference, DecodedPrompt, DecodedSFT,
                                           normalize_tiles)
from r1v2_jax.data.pipeline.loader import InputPipeline, PipelineConfig
from r1v2_jax.data.pipeline.sources import open_source
from r1v2_jax.data.pipeline.validate import KINDS, Validated, prevalidate

__all__ = ["DecodedPreference", "DecodedPrompt", "DecodedSFT", "InputPipeline", "KINDS",
           "PipelineConfig", "Validated", "normalize_tiles", "open_source", "prevalidate"]
