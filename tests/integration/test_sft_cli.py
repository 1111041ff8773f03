"""``sft`` through the real CLI: a small sweep scored by exact match (``marker:####``) on
arithmetic problems, then every bad input of sft data as one line, exit 2, and the store (which
holds trials) unchanged."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from helpers import _char_tokenizer, lorasweep_cli, make_tiny_llama, store_digest
from optuna.trial import TrialState

from lorasweep.sweep.study import trial_template
from lorasweep.tasks.arith import make_problems

PROBLEMS = make_problems(24, seed=11, level=1)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _chat(question: str, answer: str, last: str = "assistant", role: str = "user") -> dict:
    return {"messages": [{"role": role, "content": question}, {"role": last, "content": answer}]}


def _args(model: Path, dataset: str, *sets: str, sweep: str = "sft") -> list[str]:
    out = ["run", "--task", "sft", "--dataset", dataset, "--model", str(model),
           "--variant", "lora", "--lrs", "1e-3", "--steps", "2", "--batch-size", "4",
           "--launcher", "inline", "--storage", "sqlite:///studies.db", "--sweep", sweep,
           "--set", "task.metric=exact_match", "--set", "task.extract=marker:####",
           "--set", "task.eval_limit=3", "--set", "task.max_new_tokens=6",
           "--set", "train.max_length=200"]
    for assignment in sets:
        out += ["--set", assignment]
    return out


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sft")
    model = make_tiny_llama(cwd / "tiny")  # a character tokenizer with a ChatML template
    _jsonl(cwd / "arith.jsonl", [_chat(p["question"], p["answer"]) for p in PROBLEMS])
    proc = lorasweep_cli(cwd, *_args(model, "arith.jsonl"))
    assert proc.returncode == 0, proc.stderr
    return cwd, model


def test_a_sweep_scores_exact_match_and_records_what_rendered_the_rows(stored):
    cwd, model = stored
    url = f"sqlite:///{cwd / 'studies.db'}"
    (name,) = optuna.get_all_study_names(url)
    (trial,) = optuna.load_study(study_name=name, storage=url).get_trials()
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    assert trial.user_attrs["metric"] == "exact_match"
    assert 0.0 <= trial.user_attrs["validation_exact_match"] <= 1.0
    options = trial_template(optuna.load_study(study_name=name, storage=url).user_attrs)[
        "task_options"]
    assert options["tokenizer"] == str(model.resolve()) and options["max_length"] == 200
    assert options["dataset"] == str((cwd / "arith.jsonl").resolve())
    assert options["fingerprint"].startswith("sha256:")


def _cases(cwd: Path) -> dict[str, tuple[list[str], str]]:
    qa = [(p["question"], p["answer"]) for p in PROBLEMS]
    _jsonl(cwd / "columns.jsonl", [{"question": q, "answer": a} for q, a in qa])
    _jsonl(cwd / "role.jsonl", [_chat(q, a, role="bot9") for q, a in qa])
    _jsonl(cwd / "last.jsonl", [_chat(q, a, last="user") for q, a in qa])
    _jsonl(cwd / "empty.jsonl", [{"prompt": q, "completion": "" if i == 3 else a}
                                 for i, (q, a) in enumerate(qa)])
    plain = _char_tokenizer()
    plain.chat_template = None
    plain.save_pretrained(cwd / "no-template")
    rewriting = _char_tokenizer()  # earlier answers rewritten
    rewriting.chat_template = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
                               "{{ m['role'] }}: (earlier)\n{% else %}{{ m['role'] }}:"
                               "{{ m['content'] }}\n{% endif %}{% endfor %}"
                               "{% if add_generation_prompt %}assistant:{% endif %}")
    rewriting.save_pretrained(cwd / "rewriting")
    _jsonl(cwd / "two.jsonl", [{"messages": [*_chat(q, "ok")["messages"],
                                             *_chat("and?", a)["messages"]]} for q, a in qa])
    return {
        "no format fits": (["columns.jsonl"], "row 1 of columns.jsonl has none of messages / "
                           "prompt+completion / instruction+output / text"),
        "bad role": (["role.jsonl"], "row 1: role 'bot9' (turn 1) is not user/assistant/system "
                     "(map it: --set task.roles=bot9=assistant)"),
        "last turn not the assistant's": (["last.jsonl"], "the last turn is 'user', not the "
                                          "assistant's"),
        "empty answer": (["empty.jsonl"], "row 4: completion is empty"),
        "messages without a chat template": (["arith.jsonl", f"task.tokenizer={cwd / 'no-template'}"],
                                             "task.format=messages needs a chat template"),
        "a template that rewrites earlier turns": (
            ["two.jsonl", f"task.tokenizer={cwd / 'rewriting'}", "task.loss_on=assistant"],
            "rewrites earlier turns (turn 4); use task.loss_on=last"),
        "too many rows cut by max_length": (["arith.jsonl", "train.max_length=40"],
                                            "lose their whole answer at max_length=40 (over "
                                            "1%): use --set train.max_length="),
    }


@pytest.fixture(scope="module")
def refused(stored):
    cwd, model = stored
    cases = _cases(cwd)
    before = store_digest(cwd)

    def one(item):
        name, (given, _) = item
        return name, lorasweep_cli(cwd, *_args(model, given[0], *given[1:], sweep="bad"))

    with ThreadPoolExecutor(2) as pool:
        done = dict(pool.map(one, cases.items()))
    return cases, done, before


@pytest.mark.parametrize("case", ["no format fits", "bad role", "last turn not the assistant's",
                                  "empty answer", "messages without a chat template",
                                  "a template that rewrites earlier turns",
                                  "too many rows cut by max_length"])
def test_bad_sft_data_is_one_line_exit_2_and_nothing_written(stored, refused, case):
    cwd, _ = stored
    cases, done, before = refused
    proc = done[case]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert cases[case][1] in lines[0], lines[0]
    assert store_digest(cwd) == before
