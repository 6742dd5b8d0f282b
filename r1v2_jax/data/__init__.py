"""Host-side data: image tiling (`image`), tokenizer (`tokenizer`), ChatML prompts
(`prompts`), JSONL records and resumable order (`records`), the synthetic demo task
(`synthetic`). Nothing here is jitted; outputs are NumPy arrays and typed dataclasses."""
