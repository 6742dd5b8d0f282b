"""One JAX process of test_pipeline_two_processes.py: joins a 2-process job, streams its
host's share of DATA, and writes the uids of each batch and the state after each batch.

    python two_process_worker.py DATA OUT.json --coordinator H:P --process-id I [--resume STATE.json]
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # pipeline_helpers

BATCHES, BATCH = 5, 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--process-id", type=int, required=True)
    ap.add_argument("--resume")  # JSON {process_id: state}: continue from there
    args = ap.parse_args()

    from r1v2_jax.train import distributed

    distributed.initialize(args.coordinator, 2, args.process_id, 1)
    import jax

    from pipeline_helpers import PROMPT, RULES, TOKENIZER
    from r1v2_jax.data.pipeline import InputPipeline, PipelineConfig, open_source

    pipe = InputPipeline(open_source(args.data), "prompt", RULES, TOKENIZER, PROMPT,
                         PipelineConfig(batch_size=BATCH, seed=5, num_threads=2,
                                        prefetch_buffer_size=3),
                         process_index=jax.process_index(), process_count=jax.process_count())
    state = None
    if args.resume:
        state = json.loads(Path(args.resume).read_text())[str(jax.process_index())]
    it = pipe.batches(state)
    uids, states = [], []
    for _ in range(BATCHES):
        uids.append([d.uid for d in next(it)])
        states.append(it.get_state())
    Path(args.out).write_text(json.dumps({"process_index": jax.process_index(),
                                          "process_count": jax.process_count(),
                                          "uids": uids, "states": states}))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
