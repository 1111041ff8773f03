"""GSM8K: grade-school math word problems, scored by exact match of the final answer.

The study's math protocol: fine-tune on the first 100k MetaMathQA rows (``--set
task.train=metamathqa``), evaluate GSM8K test. By default the task trains on GSM8K's own train
split (7,473 problems), which is smaller and needs no second dataset.

Data: the Hub's ``openai/gsm8k`` (config ``main``) and ``meta-math/MetaMathQA`` through
``datasets.load_dataset``, or, with ``--data-dir DIR`` (``--set task.data_dir=DIR``), local files in the same schema:

    DIR/train.jsonl        GSM8K train: one {"question": ..., "answer": "... #### 72"} per line
    DIR/test.jsonl         GSM8K test, same schema
    DIR/metamathqa.jsonl   only with task.train=metamathqa: {"query": ..., "response": ...} per
                           line (or metamathqa.json / MetaMathQA-395K.json: one JSON array)

Splits. Test is GSM8K test. Validation (the sweep's objective) is a fixed, seeded sample of
``validation_size`` problems held out from the training data and never trained on: from GSM8K
train, or, for MetaMathQA, from its GSM-derived rows with a numeric answer (MATH rows have symbolic
answers); there, every row rephrasing a held-out problem (same ``original_question``) is dropped
from training too. Training takes the first ``train_samples`` remaining rows in file order.
GSM8K's calculator annotations (``<<48/2=24>>``) are removed from the solutions.

Prompt: MetaMath's Alpaca-style prompt by default (``task.prompt=alpaca``), as for the study's base
model; ``--set task.prompt=auto`` (or ``chat``) uses an instruct model's chat template.
"""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path
from typing import Any

from . import generation
from ._splits import SPLIT_SEED
from .base import HubDataError, TaskData, TaskError, register_task
from .generation import hub_rows, read_rows, require_positive, row_fields
from .math_answer import extract_answer
from .math_common import MathOptions, MathTask

__all__ = ["GSM8K", "GSM8KOptions"]

GSM8K_HUB = ("openai/gsm8k", "main")
METAMATHQA_HUB = "meta-math/MetaMathQA"
METAMATHQA_FILES = ("metamathqa.jsonl", "metamathqa.json", "MetaMathQA-395K.json")
#: The study's NLG learning-rate grid.
NLG_LRS = (1e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3)
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"answer is:?\s*(.+?)\s*$", re.IGNORECASE)


@dataclasses.dataclass
class GSM8KOptions(MathOptions):
    # The study fine-tunes a base model: MetaMath's prompt, not a chat template a base model's
    # tokenizer may carry with untrained special tokens (auto / chat for instruct models).
    prompt: str = "alpaca"
    train: str = "gsm8k"  # gsm8k | metamathqa
    train_samples: int = 100_000  # at most this many training examples (the study: 100k)
    validation_size: int = 200  # held out from the training data, fixed seed


@register_task
class GSM8K(MathTask):
    """GSM8K test, exact match of the final answer; trains on GSM8K train or MetaMathQA."""

    key = "gsm8k"
    summary = "GSM8K math word problems, exact match (train: GSM8K or MetaMathQA; Hub or data_dir)"
    default_model = "meta-llama/Llama-3.1-8B"
    # The study: one epoch, global batch 64 (16 x 4 accumulated), max length 1024; bf16 autocast
    # is automatic on CUDA. ``steps: None`` so the epoch budget is not cut by a default step count.
    default_train = {"epochs": 1.0, "steps": None, "batch_size": 16, "grad_accum": 4,
                     "max_length": 1024}
    default_lrs = NLG_LRS
    Options = GSM8KOptions

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options.train not in ("gsm8k", "metamathqa"):
            raise TaskError(f"task.train must be gsm8k or metamathqa, got {self.options.train!r}")
        require_positive(self.options.train_samples, "train_samples", 100_000)
        require_positive(self.options.validation_size, "validation_size", 200)

    # ------------------------------------------------------------------ where the data is

    def _layout_hint(self) -> str:
        files = "DIR/train.jsonl and DIR/test.jsonl (GSM8K's splits, one {\"question\", \"answer\"} "
        files += "object per line)"
        if self.options.train == "metamathqa":
            files = ("DIR/test.jsonl (GSM8K test, one {\"question\", \"answer\"} object per line) "
                     "and DIR/metamathqa.jsonl (MetaMathQA, one {\"query\", \"response\"} object "
                     "per line; or the Hub's MetaMathQA-395K.json array)")
        return f"without network, put {files} and pass --data-dir DIR"

    def _local_files(self) -> dict[str, Path]:
        root = Path(self.options.data_dir).expanduser()
        files = {"test": root / "test.jsonl"}
        if self.options.train == "metamathqa":
            found = [root / n for n in METAMATHQA_FILES if (root / n).is_file()]
            files["metamathqa"] = found[0] if found else root / METAMATHQA_FILES[0]
        else:
            files["train"] = root / "train.jsonl"
        return files

    def check_available(self) -> None:
        if self.options.data_dir is not None:
            missing = [str(p) for p in self._local_files().values() if not p.is_file()]
            if missing:
                raise TaskError(f"gsm8k: missing {' and '.join(missing)}; {self._layout_hint()}")
            return
        hubs = [GSM8K_HUB[0]] + ([METAMATHQA_HUB] if self.options.train == "metamathqa" else [])
        for repo in hubs:
            if not generation.hub_usable(repo):
                raise HubDataError(f"gsm8k: cannot reach {repo} on the Hugging Face Hub and it is not "
                                f"in the local cache; {self._layout_hint()}")

    # ------------------------------------------------------------------ loading

    def _hub(self, *args: str, split: str) -> list[dict[str, Any]]:
        return hub_rows(self.key, *args, split=split, hint=self._layout_hint())

    def _rows(self, name: str) -> list[dict[str, Any]]:
        if self.options.data_dir is None:
            if name == "metamathqa":
                return self._hub(METAMATHQA_HUB, split="train")
            return self._hub(*GSM8K_HUB, split=name)
        path = self._local_files()[name]
        if not path.is_file():
            raise TaskError(f"gsm8k: missing {path}; {self._layout_hint()}")
        return read_rows(path)

    def load(self) -> TaskData:
        test = [_gsm8k_example(r, f"GSM8K test row {i}") for i, r in enumerate(self._rows("test"))]
        if self.options.train == "metamathqa":
            pool = [_metamath_example(r, i) for i, r in enumerate(self._rows("metamathqa"))]
            eligible = [i for i, e in enumerate(pool) if e["_gsm_numeric"]]
        else:
            pool = [_gsm8k_example(r, f"GSM8K train row {i}")
                    for i, r in enumerate(self._rows("train"))]
            eligible = list(range(len(pool)))
        size = self.options.validation_size
        if len(eligible) <= size:
            raise TaskError(f"gsm8k: {len(eligible)} usable training rows, not enough to hold out "
                            f"validation_size={size} (lower it with --set task.validation_size=N)")
        held = set(random.Random(SPLIT_SEED).sample(eligible, size))  # the task's, not the trial's
        held_sources = {pool[i]["_source"] for i in held}
        validation = [pool[i] for i in sorted(held)]
        train = [e for i, e in enumerate(pool)
                 if i not in held and e["_source"] not in held_sources][: self.options.train_samples]
        return TaskData(train=_public(train), validation=_public(self.limited(validation)),
                        test=_public(self.limited(test)))


def _public(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"question": e["question"], "answer": e["answer"]} for e in examples]


def _fields(row: dict[str, Any], names: tuple[str, str], where: str) -> tuple[str, str]:
    found = row_fields(row, names, where)
    return found[names[0]].strip(), found[names[1]].strip()


def _gsm8k_example(row: dict[str, Any], where: str) -> dict[str, Any]:
    question, answer = _fields(row, ("question", "answer"), where)
    if "####" not in answer or extract_answer(answer) is None:
        raise TaskError(f"{where}: the answer does not end in '#### <number>' (GSM8K's format)")
    return {"question": question, "answer": _CALCULATOR.sub("", answer), "_source": question}


def _metamath_example(row: dict[str, Any], index: int) -> dict[str, Any]:
    query, response = _fields(row, ("query", "response"), f"MetaMathQA row {index}")
    final = _FINAL.search(response.splitlines()[-1] if response else "")
    numeric = final is not None and extract_answer(final.group(1)) is not None
    numeric = numeric and bool(re.fullmatch(r"[-$\d,.\s]+\.?", final.group(1)))
    gsm = str(row.get("type", "GSM")).startswith("GSM")
    source = row.get("original_question") or query
    return {"question": query, "answer": response, "_source": source,
            "_gsm_numeric": gsm and numeric}
