"""The study's recipes stay valid and say what the study ran (loaded, validated, never run)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from lorasweep.config import SweepSpec, load_recipe
from lorasweep.launch.run import check_spec
from lorasweep.sweep.spec import build_spec, sweep_tasks, train_for
from lorasweep.tasks import task_registry
from lorasweep.variants import get_variant_class, registry
from lorasweep.variants.study import StudySettingWarning, study_settings

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
STUDY = {  # recipe -> (task, model, the study's learning-rate grid)
    "study-gsm8k": ("gsm8k", "meta-llama/Llama-3.1-8B",
                    [1e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3]),
    "study-gsm8k-qlora": ("gsm8k", "meta-llama/Llama-3.1-8B",
                          [1e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3]),
    "study-humaneval": ("humaneval", "meta-llama/Llama-3.1-8B",
                        [1e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3]),
    "study-glue": ("glue", "FacebookAI/roberta-base", [1e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3]),
    "study-ic": ("ic", "openai/clip-vit-base-patch16",
                 [1e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3]),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Where the GSM8K recipe's data would be found offline: validation only checks that the
    files exist (the recipe itself reads the Hub), so empty files stand in for them here."""
    root = tmp_path_factory.mktemp("gsm8k-data")
    for name in ("test.jsonl", "metamathqa.jsonl"):
        (root / name).write_text("")
    return root


def _load(name: str, data_dir: Path) -> SweepSpec:
    data = load_recipe(RECIPES / f"{name}.yaml")
    if name.startswith("study-gsm8k"):
        data["task_options"] = {**data["task_options"], "data_dir": str(data_dir)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", StudySettingWarning)  # every variant at its study rank
        return check_spec(build_spec(data))


@pytest.mark.parametrize("name", sorted(STUDY))
def test_recipe_starts_with_its_command_and_validates(name, data_dir):
    first = (RECIPES / f"{name}.yaml").read_text().splitlines()[0]
    assert first.startswith(f"# lorasweep run --recipe recipes/{name}.yaml"), first
    spec = _load(name, data_dir)
    task, model, lrs = STUDY[name]
    assert (spec.task, spec.model, spec.lrs, spec.seeds) == (task, model, lrs, [0])
    assert spec.name == name


@pytest.mark.parametrize("name", sorted(STUDY))
def test_recipe_runs_every_variant_at_its_study_settings(name, data_dir):
    spec = _load(name, data_dir)
    assert sorted(v.key for v in spec.variants) == sorted(registry())
    for v in spec.variants:
        study = study_settings(get_variant_class(v.key))
        assert (v.rank, v.alpha) == (study["rank"], study["alpha"]), v.key
        resolved = {**get_variant_class(v.key).option_defaults(), **v.options}
        assert resolved == study["options"], v.key


def test_nlg_recipes_adapt_every_linear_layer_of_the_blocks_at_the_study_budget(data_dir):
    for name in ("study-gsm8k", "study-humaneval"):
        spec = _load(name, data_dir)
        for v in spec.variants:  # every linear layer of the blocks: Table II's setting
            assert v.target_modules == ["all-linear"], (name, v.key)
        train = train_for(spec, spec.task)
        assert (train.epochs, train.batch_size * train.grad_accum, train.max_length) == (1, 64, 1024)
        assert train.precision == "bf16"
    assert _load("study-gsm8k", data_dir).task_options["train"] == "metamathqa"
    assert _load("study-humaneval", data_dir).task_options["samples"] == 8


def test_glue_recipe_keeps_each_task_its_own_evaluation_per_epoch(data_dir):
    spec = _load("study-glue", data_dir)
    assert len(sweep_tasks(spec)) == 9 and "glue-wnli" in sweep_tasks(spec)
    for task in sweep_tasks(spec):
        train = train_for(spec, task)
        assert (train.epochs, train.batch_size, train.max_length) == (10, 32, 256)
        assert (train.schedule, train.warmup_ratio, train.weight_decay) == ("linear", 0.03, 0.0)
        # once per epoch, from the task's own size (not one value for all nine)
        assert train.eval_every == task_registry()[task].default_train["eval_every"]


def test_the_qlora_recipe_is_the_gsm8k_study_over_nf4(data_dir):
    qlora, plain = _load("study-gsm8k-qlora", data_dir), _load("study-gsm8k", data_dir)
    assert qlora.model_options == {**plain.model_options, "quantize": "nf4"}
    assert qlora.variants == plain.variants and qlora.train == plain.train
