"""Peak memory of one training step on CPU, against the pre-trial estimate (``lorasweep.sweep.memory``).

Each measurement runs in a fresh process: the embedded model is loaded, LoRA applied, the
resident set size (RSS) read, then one optimizer step (forward, backward, AdamW) runs on a batch
of random token ids at the full length, and the process's peak RSS (``ru_maxrss``) is read. The
step's own peak is the difference; the estimate's activation part is compared with it. Usage:

    python benchmarks/bench_memory.py [embedded:minilm|embedded:smollm2] [BATCHxLENGTH ...]
"""

from __future__ import annotations

import json
import subprocess
import sys

_STEP = r"""
import json, resource, sys, torch, psutil
from lorasweep.tasks import find_task
from lorasweep.train.model import load_model
from lorasweep.variants import apply_variant, get_variant
model_id, task_key, batch, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(1)
task = find_task(task_key)
loaded = load_model(model_id, task, 0)
model = apply_variant(loaded.model, "lora", rank=8, modules_to_save=loaded.heads)
variant = get_variant(model)
vocab = model.config.vocab_size
ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(0))
inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
inputs["labels"] = ids if task.model_kind == "causal-lm" else torch.zeros(batch, dtype=torch.long)
optimizer = torch.optim.AdamW([p for g in variant.param_groups(1e-4) for p in g["params"]])
model.train()
before = psutil.Process().memory_info().rss
peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
model(**inputs).loss.backward()
optimizer.step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"rss_before": before, "peak_before": peak_before, "peak": peak}))
"""


def measure(model: str, task: str, batch: int, length: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _STEP, model, task, str(batch), str(length)],
                         capture_output=True, text=True, check=True,
                         env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from lorasweep.sweep.memory import activation_bytes, model_facts

    model = sys.argv[1] if len(sys.argv) > 1 else "embedded:minilm"
    task = "sentiment" if model == "embedded:minilm" else "gsm8k"
    sizes = [tuple(map(int, s.split("x"))) for s in sys.argv[2:]] or [(16, 128), (32, 256)]
    facts = model_facts(model, task)
    for batch, length in sizes:
        m = measure(model, task, batch, length)
        step = m["peak"] - m["rss_before"]
        est = activation_bytes(facts, batch, length)
        print(f"{model} batch {batch} x length {length}: step peak {step / 2**20:.0f} MiB, "
              f"estimate {est / 2**20:.0f} MiB (x{est / step:.2f})", flush=True)


if __name__ == "__main__":
    main()
