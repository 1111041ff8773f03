"""Final-answer extraction and exact match of math solutions, on hand-written texts."""

from __future__ import annotations

import pytest

from lorasweep.tasks.math_answer import (
    accuracy_of_texts,
    exact_match,
    extract_answer,
    normalise_number,
)


@pytest.mark.parametrize(("text", "expected"), [
    # GSM8K's marker
    ("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips.\n#### 72", "72"),
    ("#### 1,000", "1000"),
    ("####72", "72"),
    ("#### -3", "-3"),
    ("#### 2.50", "2.5"),
    # MetaMathQA's marker, with money, commas and a trailing period
    ("So she makes 9 * 2 = $18 every day.\nThe answer is: 18", "18"),
    ("the answer is: $1,234.50.", "1234.5"),
    ("The answer is 42.", "42"),
    ("The final answer is -7.", "-7"),
    ("So the answer is $0.75 per apple.", "0.75"),
    ("The answer is that she makes $18 a day.", "18"),
    ("Answer: 12", "12"),
    ("The answer is \\boxed{64}.", "64"),
    ("\\boxed{3.0}", "3"),
    # the last marker with a number wins; a marker with no number close after it is skipped
    ("The answer is 5. Wait, I made an error. The answer is 6.", "6"),
    ("#### 10\nThe answer is: 10", "10"),
    ("The answer is not obvious. First, 3 + 4 = 7", "7"),
    ("The answer is:\nwe add 2 and 2 to get 4", "4"),
    # a base model writing the next Alpaca turn: the continuation is not the answer
    ("Each gets 4 cookies.\n#### 4\n\n### Instruction:\nTom has 9 apples. #### 9", "4"),
    ("She has 15 left.\n### Response: 99", "15"),
    # no marker: the last number
    ("3 + 4 = 7, then 7 * 2 = 14", "14"),
    ("She pays $1,234 in total.", "1234"),
    ("It takes 2.5 hours.", "2.5"),
    ("The temperature drops to -12 degrees.", "-12"),
    ("The balance is −40 dollars.", "-40"),
    ("About .5 of them", "0.5"),
    ("5-3=2", "2"),
    ("x = -5", "-5"),
    ("1,000,000 grains", "1000000"),
    ("7, 8, 9", "9"),
    ("1,2345", "2345"),
    ("10.00%", "10"),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", ["", "no numbers here", "The answer is: x", "H2O and CO2"])
def test_no_number_gives_none(text):
    assert extract_answer(text) is None


@pytest.mark.parametrize(("raw", "expected"), [
    ("3.0", "3"), ("3", "3"), ("1,000", "1000"), ("$1,234.50", "1234.5"), ("12.", "12"),
    ("-0", "0"), ("-0.0", "0"), ("0.10", "0.1"), (".5", "0.5"), ("−2", "-2"), ("007", "7"),
    ("1e3", "1000"), ("abc", None), ("", None), ("nan", None), ("inf", None),
])
def test_normalise_number(raw, expected):
    assert normalise_number(raw) == expected


@pytest.mark.parametrize(("pred", "gold", "hit"), [
    ("The answer is: 18", "18", True),
    ("The answer is 18.0", "18", True),
    ("The answer is $1,000.", "1000", True),
    ("#### 1000", "1,000", True),
    ("so she has 3 left\n#### 3", "Janet sells 16 - 3 - 4 = 9 duck eggs.\n#### 9", False),
    ("so she has 9 left\n#### 9", "Janet sells 16 - 3 - 4 = 9 duck eggs.\n#### 9", True),
    ("The answer is 17", "18", False),
    ("The answer is 18", "-18", False),
    ("The answer is 1.8", "18", False),
    ("I do not know", "18", False),
    ("", "18", False),
    ("The answer is 5", "no number", False),  # an unusable gold answer never matches
])
def test_exact_match(pred, gold, hit):
    assert exact_match(pred, gold) is hit


@pytest.mark.parametrize(("text", "flexible", "strict"), [
    ("17 + 36 = 53 candles.\n#### 53", "53", "53"),
    ("#### 1,000", "1000", "1000"),
    ("She has 17 + 36 = 53 candles.", "53", None),  # no marker: flexible takes the last number
    ("The answer is 53.", "53", None),  # another marker: strict reads only ####
    ("\\boxed{53}", "53", None),
    ("#### 12 then #### 53\n", "53", "53"),  # the last #### that has a number
    ("#### unknown.\nSo 53", "53", None),  # a marker without a number: no strict answer
    ("", None, None),
])
def test_strict_extraction_reads_only_the_gsm8k_marker(text, flexible, strict):
    assert extract_answer(text) == flexible
    assert extract_answer(text, strict=True) == strict


def test_strict_exact_match_applies_to_the_prediction_only():
    gold = "Zoe has 17 + 36 = 53 candles.\n#### 53"
    assert exact_match("Zoe has 53 candles.", gold) is True
    assert exact_match("Zoe has 53 candles.", gold, strict=True) is False
    assert exact_match("Zoe has 53 candles.\n#### 53", gold, strict=True) is True
    assert exact_match("#### 53", "53", strict=True) is True  # a bare gold number still counts
    texts = ["The sum is 53.", "#### 53", "#### 54"]
    assert accuracy_of_texts(texts, ["53"] * 3) == pytest.approx(2 / 3)
    assert accuracy_of_texts(texts, ["53"] * 3, strict=True) == pytest.approx(1 / 3)


def test_accuracy_of_texts():
    assert accuracy_of_texts(["#### 1", "#### 2", "#### 0"], ["1", "2", "3"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="empty"):
        accuracy_of_texts([], [])
    with pytest.raises(ValueError, match="predictions"):
        accuracy_of_texts(["1"], ["1", "2"])
