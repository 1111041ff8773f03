"""Evaluation speed of a generative task: the previous evaluation vs the current one.

    python benchmarks/bench_generation.py [--problems 16] [--level 1] [--same]

Both evaluate the same ``arith`` test problems with the same model (``embedded:smollm2``) and
prompts, in one process, one after the other:

- *before*: what evaluation did until now: ``model.generate`` per length-sorted batch of the
  training batch size (8), greedy, ``max_new_tokens`` = the old default (96), stopping a row at
  EOS or once its tail holds a complete ``#### N`` (a per-step stopping criterion that decodes
  the last 32 tokens of every row); finished rows ride along until the whole batch is done.
- *after*: the task's own evaluation (:mod:`lorasweep.tasks.decode`) with its defaults (the
  level's budget, ``eval_batch_size`` 64): finished rows leave the batch and its KV cache at
  once; the prompt pass computes only the last position's logits. ``--same`` gives it the
  before's budget and batch size instead, to see the decoder alone.

Printed: seconds, problems/s, generated tokens/s (tokens kept up to each answer's end), the
exact match of each, and the ratios after/before. Timings on a shared machine are noisy: the
ratio, measured side by side, is the figure to quote.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import time
from typing import Any

_WRITTEN = re.compile(r"(?:####|answer is:?)\s*\$?\s*[-−]?[\d,]*\.?\d+\s*(?:\n|[.!?]\s)",
                      re.IGNORECASE)


def _before(task: Any, model: Any, tokenizer: Any, examples: list[dict], batch_size: int,
            max_new_tokens: int) -> list[str]:
    """The previous evaluation path (transformers' generate + a text stopping criterion)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    pad = task.pad_id(tokenizer)
    stop = sorted({tokenizer.eos_token_id, model.generation_config.eos_token_id} - {None})
    prompts = [task.encode(tokenizer, e["question"])[0] for e in examples]
    order = sorted(range(len(examples)), key=lambda i: len(prompts[i]))
    texts = [""] * len(examples)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in chunk)

        class Written(StoppingCriteria):
            def __init__(self, start: int):
                self.start = start

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                tails = tokenizer.batch_decode(input_ids[:, self.start:][:, -32:],
                                               skip_special_tokens=True)
                return torch.tensor([bool(_WRITTEN.search(t)) for t in tails])

        ids = [[pad] * (width - len(prompts[i])) + prompts[i] for i in chunk]
        mask = [[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in chunk]
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                 max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=pad, eos_token_id=stop,
                                 stopping_criteria=StoppingCriteriaList([Written(width)]))
        for i, text in zip(chunk, tokenizer.batch_decode(out[:, width:], skip_special_tokens=True),
                           strict=True):
            written = _WRITTEN.search(text)
            texts[i] = text[:written.end()] if written else text
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8, help="the before's batch size")
    parser.add_argument("--budget", type=int, default=96, help="the before's max_new_tokens")
    parser.add_argument("--same", action="store_true", help="after: the before's settings")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from lorasweep.tasks import get_task
    from lorasweep.tasks.math_answer import accuracy_of_texts
    from lorasweep.train.model import load_model

    torch.set_num_threads(args.threads)
    same = {"max_new_tokens": args.budget, "eval_batch_size": args.batch_size}
    task = get_task("arith", level=args.level, **(same if args.same else {}))
    examples = task.load().test[: args.problems]
    loaded = load_model("embedded:smollm2", task, seed=0)
    model, tokenizer = loaded.model, loaded.tokenizer
    model.eval()
    golds = [e["answer"] for e in examples]
    rows = {}
    for name in ("before", "after"):
        started = time.perf_counter()
        if name == "before":
            texts = _before(task, model, tokenizer, examples, args.batch_size, args.budget)
        else:
            texts = [t[0] for t in task.generate(model, tokenizer, examples,
                                                 task.options.eval_batch_size, 1024,
                                                 contextlib.nullcontext)]
        seconds = time.perf_counter() - started
        tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        rows[name] = (seconds, len(examples) / seconds, tokens / seconds,
                      accuracy_of_texts(texts, golds), texts)
        print(f"{name:>6}: {seconds:7.1f} s  {rows[name][1]:6.3f} problems/s  "
              f"{rows[name][2]:6.1f} tokens/s  exact match {rows[name][3]:.3f}", flush=True)
    same = sum(a == b for a, b in zip(rows["before"][4], rows["after"][4], strict=True))
    print(f"ratio after/before: {rows['after'][1] / rows['before'][1]:.2f}x problems/s, "
          f"{rows['after'][2] / rows['before'][2]:.2f}x tokens/s; "
          f"{same}/{len(examples)} identical answers; after: budget {task.options.max_new_tokens}, "
          f"batch {task.options.eval_batch_size}; before: budget {args.budget}, batch "
          f"{args.batch_size}; level {args.level}, {args.threads} threads)")


if __name__ == "__main__":
    main()
