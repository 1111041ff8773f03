"""HumanEval pass@1 after training on CodeFeedback: the study's code-generation protocol.

Data. Training: the first ``train_samples`` (100,000) rows of ``m-a-p/CodeFeedback-Filtered-
Instruction`` (fields ``query``, ``answer``). Evaluation: the 164 problems of
``openai/openai_humaneval`` (``task_id``, ``prompt``, ``canonical_solution``, ``test``,
``entry_point``). Both come from the Hugging Face Hub through ``datasets``, or, with
``--data-dir DIR`` (``--set task.data_dir=DIR``), from JSON Lines files in the Hub's schemas (one row per line):

    DIR/humaneval.jsonl      the HumanEval problems
    DIR/codefeedback.jsonl   CodeFeedback rows (at least train_samples of them are used if present)

On a machine with network: ``datasets.load_dataset("openai/openai_humaneval", split="test")
.to_json("DIR/humaneval.jsonl")`` and the same for CodeFeedback's ``train`` split.

Splits. HumanEval has no validation split and the study reports HumanEval itself, so validation
and test are the *same* list (``data.test is data.validation``, as GLUE's tasks do): the sweep
selects on the study's number. A held-out slice of 164 problems would make both numbers noisier.

Prompts, collation and generation: the instruction-tuning base (:mod:`.generation`; option
``prompt`` = auto | alpaca | chat) with the query as instruction and the answer as target.
Evaluation: the same format with the instruction
"Complete the following Python function" and the problem's code, and the response is *started*
with a fenced block holding the problem's prompt, so the model continues the function body. The
prompt's trailing whitespace is removed there (as the usual harnesses do): the model then writes
the newline and indentation itself; with a trailing newline in the input, small models tend to
close the block at once. The completion is that prompt + the body, cut at the first stop
sequence (generation of that sample stops there) (Codex's ``\\ndef``, ``\\nclass``, ``\\nif __name__``, ``\\nprint(``, ``\\n#``, plus a
newline followed by the closing fence).

Metric. pass@1 averaged over ``samples`` completions per problem (the study: 8 evaluation runs):
the mean over problems of (completions that pass) / ``samples``, which is the unbiased pass@1
estimate. ``samples == 1`` is greedy decoding; otherwise nucleus sampling with ``temperature``
0.2 and ``top_p`` 0.95 (the Codex paper's pass@1 setting), seeded with ``seed`` (a private
generator: the global RNG is untouched). A completion passes when the problem's tests, run in a
judge process of their own, pass against its entry point served from the sandbox
(:func:`lorasweep.tasks.sandbox.run_tests`) within ``timeout`` seconds; ``workers`` checks run at
a time.

Budget (study): one epoch over the 100k rows at a global batch of 64 (16 x 4 accumulated), max
length 1024, bf16 autocast on CUDA (automatic), the study's NLG learning-rate grid; the rest as
the GSM8K task (TrainConfig's defaults).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar

from .base import TaskData, TaskError, register_task
from .generation import GenerationOptions, GenerationTask, hub_rows, read_rows, row_fields
from .sandbox import SandboxLimits, run_many

__all__ = ["HumanEval", "STOP_SEQUENCES", "pass_at_1", "program", "truncate_body"]

HUMANEVAL_ID = "openai/openai_humaneval"
CODEFEEDBACK_ID = "m-a-p/CodeFeedback-Filtered-Instruction"
STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```")
CODE_LRS = (1e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3)
_PROBLEM_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
_TRAIN_FIELDS = ("query", "answer")
_FILES = {"humaneval": "humaneval.jsonl", "codefeedback": "codefeedback.jsonl"}
_EVAL_QUERY = "Complete the following Python function.\n\n```python\n{prompt}```"


# --------------------------------------------------------------------------- scoring (no torch)


def _stop(text: str) -> int | None:
    found = [i for i in (text.find(s) for s in STOP_SEQUENCES) if i >= 0]
    return min(found) if found else None


def truncate_body(body: str, prompt: str = "\n") -> str:
    """The generated function body up to the first stop sequence; a stop sequence may start
    with the prompt's last newline (a body that opens with ``def`` or a closing fence)."""
    lead = "\n" if prompt.endswith("\n") else ""
    cut = _stop(lead + body)
    return body if cut is None else body[:max(cut - len(lead), 0)]


def program(problem: dict[str, Any], completion: str) -> tuple[str, str]:
    """What the sandbox runs: the completion (prompt + body) as the untrusted program, and the
    trusted tests (the problem's prompt for its helpers, its tests, and ``check`` called on a
    proxy of the completion's entry point, which also takes the entry point's name) in a judge
    process of their own."""
    name = problem["entry_point"]  # some tests call the function by its name, not `candidate`
    tests = f"{problem['prompt']}\n\n{problem['test']}\n\n{name} = sample({name!r})\ncheck({name})\n"
    return completion, tests


def pass_at_1(problems: list[dict[str, Any]], completions: list[list[str]], timeout: float = 5.0,
              workers: int = 4) -> float:
    """Mean over problems of the share of their completions (prompt + body) that pass."""
    if not problems:
        raise ValueError("pass@1 of an empty set")
    if len(completions) != len(problems) or any(not c for c in completions):
        raise ValueError("pass@1 needs a non-empty list of completions for every problem")
    programs = [program(p, c) for p, cs in zip(problems, completions, strict=True) for c in cs]
    results = iter(run_many(programs, SandboxLimits(timeout=timeout), workers))
    shares = [sum(next(results).passed for _ in cs) / len(cs) for cs in completions]
    return sum(shares) / len(shares)


# --------------------------------------------------------------------------- the task


@dataclasses.dataclass
class HumanEvalOptions(GenerationOptions):
    train_samples: int = 100_000  # CodeFeedback rows to train on (the first ones)
    samples: int = 8  # completions per problem; 1 = greedy
    temperature: float = 0.2
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int = 0  # sampling seed of the evaluation
    timeout: float = 5.0  # seconds per completion in the sandbox
    workers: int | None = None  # sandboxes at a time; default min(8, CPUs)


def _rows(rows: list[dict[str, Any]], fields: tuple[str, ...], where: str) -> list[dict]:
    return [row_fields({f: str(v) for f, v in r.items() if v is not None}, fields,
                       f"{where}:{i}") for i, r in enumerate(rows, 1)]


@register_task
class HumanEval(GenerationTask):
    """Code generation: train on CodeFeedback, score HumanEval pass@1 (see the module docstring)."""

    key = "humaneval"
    summary = "HumanEval pass@1 after CodeFeedback training (needs the Hub or task.data_dir)"
    metric = "pass@1"
    default_model = "meta-llama/Llama-3.1-8B"
    Options = HumanEvalOptions
    default_train: ClassVar[dict[str, Any]] = {
        "epochs": 1.0, "steps": None, "batch_size": 16, "grad_accum": 4, "max_length": 1024,
    }
    default_lrs = CODE_LRS

    def __init__(self, **options: Any):
        super().__init__(**options)
        o = self.options
        for name in ("train_samples", "samples"):
            value = getattr(o, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise TaskError(f"task.{name} must be a positive integer, got {value!r}")
        if o.workers is not None and (not isinstance(o.workers, int) or o.workers <= 0):
            raise TaskError(f"task.workers must be a positive integer, got {o.workers!r}")
        if not isinstance(o.temperature, (int, float)) or o.temperature <= 0:
            raise TaskError(f"task.temperature must be positive, got {o.temperature!r}")
        if not isinstance(o.top_p, (int, float)) or not 0 < o.top_p <= 1:
            raise TaskError(f"task.top_p must be in (0, 1], got {o.top_p!r}")
        if not isinstance(o.timeout, (int, float)) or o.timeout <= 0:
            raise TaskError(f"task.timeout must be positive seconds, got {o.timeout!r}")

    # ------------------------------------------------------------------ data

    def _hint(self) -> str:
        return (f"put {HUMANEVAL_ID} (its test split) in DIR/{_FILES['humaneval']} and "
                f"{CODEFEEDBACK_ID} (its train split) in DIR/{_FILES['codefeedback']}, as JSON "
                "Lines in the Hub's schemas, and pass --data-dir DIR")

    def check_available(self) -> None:
        if self.options.data_dir is None:
            return  # the Hub (or its local cache): only load() can tell
        root = Path(self.options.data_dir).expanduser()
        missing = [str(root / f) for f in _FILES.values() if not (root / f).is_file()]
        if missing:
            raise TaskError(f"{self.key}: missing {' and '.join(missing)}: {self._hint()}")

    def _load_hub(self) -> tuple[list[dict], list[dict]]:
        hint = f"without network, {self._hint()}"
        problems = hub_rows(self.key, HUMANEVAL_ID, split="test", hint=hint)
        train = hub_rows(self.key, CODEFEEDBACK_ID, split="train", hint=hint,
                         limit=self.options.train_samples)
        return (_rows(problems, _PROBLEM_FIELDS, HUMANEVAL_ID),
                _rows(train, _TRAIN_FIELDS, CODEFEEDBACK_ID))

    def load(self) -> TaskData:
        if self.options.data_dir is None:
            problems, train = self._load_hub()
        else:
            self.check_available()
            root = Path(self.options.data_dir).expanduser()
            path = root / _FILES["humaneval"]
            problems = _rows(read_rows(path), _PROBLEM_FIELDS, str(path))
            path = root / _FILES["codefeedback"]
            train = _rows(read_rows(path, self.options.train_samples), _TRAIN_FIELDS, str(path))
        problems = self.limited(problems)
        return TaskData(train=train, validation=problems, test=problems)

    def length(self, example: dict[str, Any]) -> int:
        return len(example.get("query", example.get("prompt", ""))) + len(example.get("answer", ""))

    # ------------------------------------------------------------------ the base's hooks

    def instruction(self, example: dict[str, Any]) -> str:
        return example["query"]

    def generation_prompt(self, example: dict[str, Any]) -> tuple[str, str]:
        """The instruction with the problem's code; the response opens a code block with it."""
        return (_EVAL_QUERY.format(prompt=example["prompt"]),
                "```python\n" + example["prompt"].rstrip())

    def answer_end(self, text: str) -> int | None:
        return _stop(text)

    def score(self, examples: list[dict[str, Any]], texts: list[list[str]]) -> float:
        workers = self.options.workers or min(8, os.cpu_count() or 1)
        return pass_at_1(examples, texts, self.options.timeout, workers)

    def completions(self, model: Any, tokenizer: Any, problems: list[dict[str, Any]],
                    batch_size: int, max_length: int, autocast: Any) -> list[list[str]]:
        """``samples`` completions (the problem's prompt without trailing whitespace + the body
        up to its first stop sequence) per problem, in the problems' order."""
        o = self.options
        sampling = (o.temperature, o.top_p, o.seed) if o.samples > 1 else None
        texts = self.generate(model, tokenizer, problems, batch_size, max_length, autocast,
                              o.samples, sampling)
        return [[t.removeprefix("```python\n") for t in ts] for ts in texts]

    def evaluate(self, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                 batch_size: int, max_length: int, autocast: Any) -> float:
        """pass@1 over ``examples``."""
        batch_size = self.options.eval_batch_size or batch_size
        return self.score(examples, self.completions(model, tokenizer, examples, batch_size,
                                                     max_length, autocast))
