"""Fast KV-cached generation (greedy / temperature / top-k / top-p) and sequence scoring."""

from r1v2_jax.generate.api import GenerationOutput, generate
from r1v2_jax.generate.buckets import Buckets, bucket_size
from r1v2_jax.generate.engine import (EngineStats, clear_program_cache, engine_stats,
                                      reset_engine_stats)
from r1v2_jax.generate.sampling import filtered_logits, sample_tokens
from r1v2_jax.generate.scoring import sequence_logprobs

__all__ = ["generate", "GenerationOutput", "Buckets", "bucket_size", "EngineStats",
           "engine_stats", "reset_engine_stats", "clear_program_cache", "filtered_logits",
           "sample_tokens", "sequence_logprobs"]
