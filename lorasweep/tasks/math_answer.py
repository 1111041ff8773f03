"""Final answers of math word problems: extraction, normalisation and exact match.

Pure Python (no torch): the metric of every math generation task, and easy to test by hand.

A solution ends with a marked answer: GSM8K writes ``#### 72``, MetaMathQA ``The answer is: 72``,
others ``\\boxed{72}`` or ``Answer: 72``. :func:`extract_answer` takes the number after the last
marker that is followed by one, and falls back to the last number in the text ("flexible"
extraction). ``strict=True`` reads only the number after GSM8K's ``####`` marker and has no
fallback, like the "strict-match" filter of common GSM8K evaluations: a task that teaches that
format scores only answers written in it. Numbers are normalised so that ``$1,234.50.`` ==
``1234.5`` and ``3.0`` == ``3``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["accuracy_of_texts", "exact_match", "extract_answer", "normalise_number"]

# A number not glued to a word or another number: "x2" and "1.2.3" are not numbers, "=-5" is.
# Thousands separators only in groups of three ("1,234,567"; "3, 4" is two numbers).
_NUMBER = re.compile(
    r"(?<![\w.])[-−]?\$?[-−]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
    r"|(?<![\w.])[-−]?\$?\.\d+"
)
_MARKER = re.compile(r"####|\banswer\s+is\b\s*:?|\banswer\s*:|\\boxed\s*\{", re.IGNORECASE)
_STRICT_MARKER = re.compile(r"####")
_SENTENCE_END = re.compile(r"\n|[.!?;](?=\s|$)")
_MARKER_REACH = 40  # "the answer is that she makes $18": the number follows within this many chars
# A base model keeps writing the next Alpaca turn after its answer: that text is not the answer.
_CONTINUATION = re.compile(r"\n\s*###\s*(?:Instruction|Response)\b")


def normalise_number(text: str) -> str | None:
    """``"$1,234.50"`` -> ``"1234.5"``, ``"3.0"`` -> ``"3"``, ``"-0"`` -> ``"0"``; None if no number."""
    cleaned = text.strip().replace(",", "").replace("$", "").replace("−", "-").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_answer(text: str, strict: bool = False) -> str | None:
    """The normalised final answer of a solution text, or None when it holds no number.

    The answer is the number that closely follows (same sentence, within 40 characters) the last
    answer marker (``####``, ``the answer is``, ``answer:``, ``\\boxed{``) that has one; without
    such a marker, the last number. Text after a new ``### Instruction`` / ``### Response``
    heading (a base model writing the next turn) is ignored. ``strict``: only the ``####``
    marker counts, and a text without one has no answer.
    """
    if not text:
        return None
    cut = _CONTINUATION.search(text)
    if cut:
        text = text[: cut.start()]
    for marker in reversed(list((_STRICT_MARKER if strict else _MARKER).finditer(text))):
        sentence = _SENTENCE_END.split(text[marker.end():], maxsplit=1)[0]
        first = _NUMBER.search(sentence)
        if first and first.start() <= _MARKER_REACH:
            return normalise_number(first.group())
    if strict:
        return None
    numbers = _NUMBER.findall(text)
    return normalise_number(numbers[-1]) if numbers else None


def exact_match(pred_text: str, gold_answer: str, strict: bool = False) -> bool:
    """Whether the final answer in ``pred_text`` equals ``gold_answer`` (a number or a solution).

    ``strict`` applies to the prediction only (see :func:`extract_answer`).
    """
    gold = extract_answer(gold_answer)
    return gold is not None and extract_answer(pred_text, strict) == gold


def accuracy_of_texts(pred_texts: list[str], gold_answers: list[str],
                      strict: bool = False) -> float:
    """Fraction of exact matches, in [0, 1]."""
    if not gold_answers:
        raise ValueError("exact match of an empty set")
    if len(pred_texts) != len(gold_answers):
        raise ValueError(f"{len(pred_texts)} predictions for {len(gold_answers)} answers")
    hits = sum(exact_match(p, g, strict) for p, g in zip(pred_texts, gold_answers, strict=True))
    return hits / len(gold_answers)
