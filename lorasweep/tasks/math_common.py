"""Math word problems as generation tasks: the answer format and the exact-match metric.

Examples are ``{"question": str, "answer": str}``: ``answer`` is the full worked solution the
model learns to write, ending in a marked final answer (``#### 72`` or ``The answer is: 72``).
Prompts, collation and generation come from :mod:`.generation`; the Alpaca prompt is MetaMath's
(the one its GSM8K evaluation uses, ending in "Let's think step by step."). Generation stops a
sequence as soon as it has written a complete marked final answer (``#### 72`` or
``The answer is 72`` followed by a line or sentence end), so rambling models cost no more than
they need and their first stated answer is the one scored (:mod:`.math_answer`).
Options (beyond the base's): none; ``eval_batch_size`` (prompts generated together; default the
training micro-batch size) is worth raising on a CPU, where a few more rows cost little.
"""

from __future__ import annotations

import re
from typing import Any

from .generation import ALPACA_PROMPT as _ALPACA
from .generation import GenerationOptions, GenerationTask, prompt_style, require_positive
from .math_answer import accuracy_of_texts

__all__ = ["ALPACA_PROMPT", "MathOptions", "MathTask", "prompt_style", "require_positive"]

_LEAD = " Let's think step by step."
#: MetaMath's instruction prompt (the Alpaca prompt and "Let's think step by step.").
ALPACA_PROMPT = _ALPACA + _LEAD
MathOptions = GenerationOptions

# A marked final answer, complete: the number is followed by a line end or a sentence end.
_WRITTEN = re.compile(r"(?:####|answer is:?)\s*\$?\s*[-−]?[\d,]*\.?\d+\s*(?:\n|[.!?]\s)",
                      re.IGNORECASE)


class MathTask(GenerationTask):
    """A math word-problem task: generation, metric exact match of the final answer."""

    metric = "exact_match"
    alpaca_lead = _LEAD
    alpaca_gap = " "

    def answer_end(self, text: str) -> int | None:
        written = _WRITTEN.search(text)
        return written.end() if written else None

    def score(self, examples: list[dict[str, Any]], texts: list[list[str]]) -> float:
        """Exact match of the (first) solution's final answer, in [0, 1].

        Flexible extraction unless the task's option ``match`` is ``"strict"`` (``#### N`` only).
        """
        strict = getattr(self.options, "match", "flexible") == "strict"
        return accuracy_of_texts([t[0] for t in texts], [e["answer"] for e in examples], strict)

    def generate_text(self, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                      batch_size: int, max_length: int, autocast: Any) -> list[str]:
        """One greedy solution per example, in their order."""
        return [t[0] for t in self.generate(model, tokenizer, examples, batch_size, max_length,
                                            autocast)]
