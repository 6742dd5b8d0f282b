"""HF checkpoint folder (either layout) -> JAX/orbax checkpoint folder.

    python convert/hf_to_jax.py SRC DST [--dtype bfloat16|float32|keep]

Same as `r1v2 convert to-jax`; see convert/README.md and docs/conversion.md.
"""

import sys

from r1v2_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "to-jax", *sys.argv[1:]]))
