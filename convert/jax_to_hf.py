"""JAX/orbax checkpoint folder -> HF checkpoint folder.

    python convert/jax_to_hf.py SRC DST --layout hf|original [--dtype ...] [--shard-size 5GB]

Same as `r1v2 convert to-hf`; see convert/README.md and docs/conversion.md.
"""

import sys

from r1v2_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "to-hf", *sys.argv[1:]]))
