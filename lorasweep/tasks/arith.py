"""The embedded offline math task: GSM8K-style word problems from a seeded generator.

Difficulty levels (option ``level``): 1 (the default) is one addition or subtraction of two
2-digit numbers ("Zoe has 17 candles and gets 36 more..." -> "Zoe has 17 + 36 = 53 candles.\n
#### 53"); 2 is two-step problems (change, ages, savings); 3 is eight templates (shopping
totals, change, production rates, sharing, ages, travel, discounts, savings) with integer answers
and 2-3 step solutions written like GSM8K's. Every solution ends in ``#### N``; the generation
budget follows the level (:data:`BUDGETS`).
Each split comes from its own fixed seed (test, then validation, then train), and a question
that appears in an earlier split is never repeated in a later one, so the splits are stable and
disjoint. Same prompt and generation as ``gsm8k``; the metric is exact match of the number
after ``####`` (option ``match``: ``strict``, the default, scores only answers written in the
format the task teaches, as GSM8K's "strict-match"; ``flexible`` extracts like ``gsm8k``, which
credits an untrained model's stray sums). The embedded model
(SmolLM2-135M-Instruct) can show a learning-rate curve on a laptop, with no download.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

from .base import TaskData, register_task
from .generation import require_choice
from .math_common import MathOptions, MathTask, require_positive

__all__ = ["BUDGETS", "LEVELS", "Arith", "ArithOptions", "make_problem", "make_problems"]

_SEEDS = {"test": 31_337, "validation": 27_182, "train": 14_142}
_NAMES = (("Ava", "she"), ("Liam", "he"), ("Maya", "she"), ("Noah", "he"), ("Zoe", "she"),
          ("Omar", "he"), ("Lena", "she"), ("Ivan", "he"), ("Priya", "she"), ("Tom", "he"))
_ITEMS = ("pencils", "notebooks", "apples", "books", "stickers", "cupcakes", "toy cars",
          "bottles of juice", "plants", "candles")
_GOODS = ("jacket", "lamp", "backpack", "bicycle helmet", "board game", "pair of shoes")
_THINGS = ("chairs", "bottles", "bricks", "toys", "boxes")

Problem = tuple[str, list[str], int]  # question, solution steps, answer


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(_NAMES)


def _shopping(rng: random.Random) -> Problem:
    name, he = _person(rng)
    first, second = rng.sample(_ITEMS, 2)
    a, p, b, q = rng.randint(2, 9), rng.randint(2, 15), rng.randint(2, 9), rng.randint(2, 15)
    question = (f"{name} buys {a} {first} at ${p} each and {b} {second} at ${q} each. "
                f"How much does {name} spend in total?")
    steps = [f"{name} spends {a} * {p} = ${a * p} on {first}.",
             f"{he.capitalize()} spends {b} * {q} = ${b * q} on {second}.",
             f"In total {he} spends {a * p} + {b * q} = ${a * p + b * q}."]
    return question, steps, a * p + b * q


def _change(rng: random.Random) -> Problem:
    name, he = _person(rng)
    item = rng.choice(_ITEMS)
    a, p = rng.randint(2, 12), rng.randint(2, 20)
    money = a * p + rng.randint(1, 60)
    question = (f"{name} has ${money}. {he.capitalize()} buys {a} {item} that cost ${p} each. "
                f"How much money does {he} have left?")
    steps = [f"The {item} cost {a} * {p} = ${a * p}.",
             f"{name} has {money} - {a * p} = ${money - a * p} left."]
    return question, steps, money - a * p


def _production(rng: random.Random) -> Problem:
    thing = rng.choice(_THINGS)
    rate, hours, days = rng.randint(5, 60), rng.randint(2, 12), rng.randint(2, 7)
    question = (f"A factory makes {rate} {thing} per hour. It runs for {hours} hours a day. "
                f"How many {thing} does it make in {days} days?")
    steps = [f"In one day it makes {rate} * {hours} = {rate * hours} {thing}.",
             f"In {days} days it makes {rate * hours} * {days} = {rate * hours * days} {thing}."]
    return question, steps, rate * hours * days


def _sharing(rng: random.Random) -> Problem:
    name, he = _person(rng)
    trays, per_tray, friends = rng.randint(2, 6), rng.choice((6, 8, 10, 12)), rng.randint(2, 6)
    total = trays * per_tray
    eaten = total % friends + friends * rng.randint(0, 1) or friends  # leaves a multiple
    each = (total - eaten) // friends
    question = (f"{name} bakes {trays} trays of {per_tray} cookies. {he.capitalize()} eats {eaten} "
                f"of them and shares the rest equally among {friends} friends. "
                f"How many cookies does each friend get?")
    steps = [f"{name} bakes {trays} * {per_tray} = {total} cookies.",
             f"After eating {eaten}, {total} - {eaten} = {total - eaten} cookies are left.",
             f"Each friend gets {total - eaten} / {friends} = {each} cookies."]
    return question, steps, each


def _ages(rng: random.Random) -> Problem:
    (name, _), (other, _) = rng.sample(_NAMES, 2)
    age, times, years = rng.randint(3, 15), rng.randint(2, 4), rng.randint(2, 10)
    question = (f"{name} is {age} years old. {other} is {times} times as old as {name}. "
                f"How old will {other} be in {years} years?")
    steps = [f"{other} is {times} * {age} = {times * age} years old now.",
             f"In {years} years {other} will be {times * age} + {years} = {times * age + years}."]
    return question, steps, times * age + years


def _travel(rng: random.Random) -> Problem:
    s1, h1, s2, h2 = rng.randint(20, 80), rng.randint(2, 5), rng.randint(20, 80), rng.randint(1, 4)
    question = (f"A train travels at {s1} miles per hour for {h1} hours, then at {s2} miles per "
                f"hour for {h2} hours. How many miles does it travel in total?")
    steps = [f"First it travels {s1} * {h1} = {s1 * h1} miles.",
             f"Then it travels {s2} * {h2} = {s2 * h2} miles.",
             f"In total it travels {s1 * h1} + {s2 * h2} = {s1 * h1 + s2 * h2} miles."]
    return question, steps, s1 * h1 + s2 * h2


def _discount(rng: random.Random) -> Problem:
    name, _ = _person(rng)
    good = rng.choice(_GOODS)
    price, off, count = 20 * rng.randint(1, 10), rng.choice((10, 20, 25, 50)), rng.randint(2, 4)
    sale = price * (100 - off) // 100
    question = (f"A {good} costs ${price}. It is on sale for {off}% off. "
                f"How much does {name} pay for {count} of them on sale?")
    steps = [f"The discount is {price} * {off} / 100 = ${price - sale}.",
             f"One {good} costs {price} - {price - sale} = ${sale} on sale.",
             f"{name} pays {count} * {sale} = ${count * sale}."]
    return question, steps, count * sale


def _savings(rng: random.Random) -> Problem:
    name, he = _person(rng)
    weekly, start, weeks = rng.randint(5, 40), rng.randint(0, 50), rng.randint(2, 12)
    goal = start + weekly * weeks
    question = (f"{name} has ${start} and saves ${weekly} every week. "
                f"How many weeks until {he} has ${goal}?")
    steps = [f"{name} needs {goal} - {start} = ${goal - start} more.",
             f"That takes {goal - start} / {weekly} = {weeks} weeks."]
    return question, steps, weeks


def _gain(rng: random.Random) -> Problem:
    name, he = _person(rng)
    item = rng.choice(_ITEMS)
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    question = f"{name} has {a} {item} and gets {b} more. How many {item} does {he} have now?"
    return question, [f"{name} has {a} + {b} = {a + b} {item}."], a + b


def _loss(rng: random.Random) -> Problem:
    name, he = _person(rng)
    item = rng.choice(_ITEMS)
    a = rng.randint(20, 99)
    b = rng.randint(10, a - 1)
    question = f"{name} has {a} {item} and gives away {b}. How many {item} does {he} have left?"
    return question, [f"{name} has {a} - {b} = {a - b} {item} left."], a - b


#: The problem templates of each difficulty level: 1 = one addition or subtraction of two
#: 2-digit numbers; 2 = the two-step problems (change, ages, savings); 3 = all of the 2-3 step
#: word problems above.
LEVELS: dict[int, tuple[Callable[[random.Random], Problem], ...]] = {
    1: (_gain, _loss),
    2: (_change, _ages, _savings),
    3: (_shopping, _change, _production, _sharing, _ages, _travel, _discount, _savings),
}
TEMPLATES = LEVELS[3]
#: Generation budget per level: the longest solution (with SmolLM2's tokenizer: 28, 47 and 69
#: tokens including the end of turn) and a little room; a trained model stops at its answer.
BUDGETS = {1: 32, 2: 56, 3: 96}


def make_problem(rng: random.Random, level: int = 3) -> dict[str, Any]:
    """One problem ``{"question", "answer"}``; the answer is a GSM8K-style worked solution."""
    question, steps, answer = rng.choice(LEVELS[level])(rng)
    return {"question": question, "answer": "\n".join([*steps, f"#### {answer}"])}


def make_problems(n: int, seed: int, exclude: set[str] | frozenset[str] = frozenset(),
                  level: int = 3) -> list[dict[str, Any]]:
    """``n`` distinct problems of ``level`` from ``seed``, none whose question is in ``exclude``."""
    rng, seen, problems = random.Random(seed), set(exclude), []
    for _ in range(200 * n + 1000):  # the template space is large: this never runs out
        if len(problems) == n:
            break
        problem = make_problem(rng, level)
        if problem["question"] not in seen:
            seen.add(problem["question"])
            problems.append(problem)
    return problems


@dataclasses.dataclass
class ArithOptions(MathOptions):
    level: int = 1  # 1 (one + or - of 2-digit numbers), 2 (two steps) or 3 (2-3 step problems)
    #: "strict": only a final answer written as ``#### N`` counts (the format the task teaches);
    #: "flexible": also "the answer is N" or, failing any marker, the last number of the text.
    match: str = "strict"
    max_new_tokens: int | None = None  # default: what the level's solutions need (BUDGETS)
    eval_batch_size: int | None = 64  # on a CPU, decoding a few more rows costs little
    train_size: int = 2000
    validation_size: int = 50
    test_size: int = 50


@register_task
class Arith(MathTask):
    """Generated GSM8K-style word problems (offline), exact match of the final answer."""

    key = "arith"
    summary = "generated GSM8K-style word problems, exact match (offline, no data needed)"
    default_model = "embedded:smollm2"
    # Sized so that the default sweep (SmolLM2-135M-Instruct, level 1, one seed) spans the
    # study's curve in about 6 minutes on an idle 2-core CPU: the untrained model does not write
    # "#### N" (lowest LRs score 0), a good LR learns the format and adds 2-digit numbers, the
    # highest LRs collapse.
    default_train = {"steps": 24, "batch_size": 8, "max_length": 128}
    default_lrs = (1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2)
    Options = ArithOptions

    def __init__(self, **options: Any):
        if options.get("max_new_tokens") is None:  # an unknown level is refused below
            options["max_new_tokens"] = BUDGETS.get(options.get("level", 1), BUDGETS[3])
        super().__init__(**options)
        for name in ("train_size", "validation_size", "test_size"):
            require_positive(getattr(self.options, name), name, getattr(ArithOptions, name))
        require_choice(self.options.level, tuple(LEVELS), "level")
        require_choice(self.options.match, ("strict", "flexible"), "match")

    def load(self) -> TaskData:
        o = self.options
        test = make_problems(o.test_size, _SEEDS["test"], level=o.level)
        validation = make_problems(o.validation_size, _SEEDS["validation"],
                                   {p["question"] for p in test}, o.level)
        train = make_problems(o.train_size, _SEEDS["train"],
                              {p["question"] for p in (*test, *validation)}, o.level)
        return TaskData(train=train, validation=self.limited(validation), test=self.limited(test))
