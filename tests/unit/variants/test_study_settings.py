"""Trainable parameters on Llama-3.1-8B equal the study's Table II, at the study's settings.

The architecture is built on the meta device from its config (no weights, no download):
hidden 4096, intermediate 14336, 32 layers, 32 heads, 8 KV heads, vocab 128256; every linear
layer of the blocks is adapted (q, k, v, o, gate, up, down), ``r = 8``, ``alpha = 16`` unless
the study set otherwise. Each count is also derived from its formula over the seven module
shapes, so a failure says whether the method or the arithmetic moved.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import lorasweep
from lorasweep.variants import get_variant_class
from lorasweep.variants.study import StudySettingWarning, study_settings

LAYERS = 32
#: (in, out) of the seven adapted linear layers of one Llama-3.1-8B block.
SHAPES = [(4096, 4096), (4096, 1024), (4096, 1024), (4096, 4096),
          (4096, 14336), (4096, 14336), (14336, 4096)]


def _llama_8b_on_meta() -> torch.nn.Module:
    config = LlamaConfig(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=LAYERS,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
        max_position_embeddings=131072, rope_theta=500000.0, tie_word_embeddings=False,
    )
    with torch.device("meta"):
        return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def count():
    """Trainable parameters after applying a variant to a fresh meta Llama-3.1-8B."""

    def _count(key: str, **settings) -> int:
        model = _llama_8b_on_meta()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StudySettingWarning)
            lorasweep.apply_variant(model, key, target_modules="all-linear", **settings)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    return _count


def _per_block(formula) -> int:
    return LAYERS * sum(formula(i, o) for i, o in SHAPES)


def _millions(n: int) -> float:
    return round(n / 1e6, 2)


def test_the_meta_model_is_llama_3_1_8b():
    model = _llama_8b_on_meta()
    assert _millions(sum(p.numel() for p in model.parameters())) == 8030.26  # 8.03B


@pytest.mark.parametrize(
    ("key", "settings", "table2", "formula"),
    [
        ("lora", {}, 20.97, lambda r, i, o: r * (i + o)),
        ("dora", {}, 22.35, lambda r, i, o: r * (i + o) + o),  # + magnitude m, one per row
        ("loramoe", {"num_experts": 8}, 30.93,  # 8 experts of rank 8 // 8 = 1, router 8 x in
         lambda r, i, o: 8 * (r // 8) * (i + o) + 8 * i),
        ("loramoe", {"num_experts": 6}, 23.20,  # 6 experts of rank max(1, 8 // 6) = 1
         lambda r, i, o: 6 * max(1, r // 6) * (i + o) + 6 * i),
    ],
)
def test_table2_at_the_protocol_rank(count, key, settings, table2, formula):
    expected = _per_block(lambda i, o: formula(8, i, o))
    got = count(key, rank=8, alpha=16, **settings)
    assert got == expected, f"{key}: {got} != formula {expected}"
    assert _millions(got) == table2


def test_denselora_at_the_study_rank_matches_table2(count):
    study = study_settings(get_variant_class("denselora"))
    assert (study["rank"], study["alpha"]) == (192, 384.0)
    r, types = 192, len(SHAPES)
    # A (r x in), B (out x r) shared per module type; one r x r mixer per layer
    expected = sum(r * (i + o) for i, o in SHAPES) + LAYERS * types * r * r
    got = count("denselora", rank=r, alpha=384)
    assert got == expected and _millions(got) == 23.99
    assert _millions(count("denselora", rank=8, alpha=16)) == 0.67  # the sweep's rank: far off


def test_randlora_at_the_study_rank_matches_table2(count):
    study = study_settings(get_variant_class("randlora"))
    assert study["rank"] == 32 and study["options"]["max_full_rank"] == 1024

    def formula(r: int, i: int, o: int) -> int:
        n = math.ceil(min(i, o, 1024) / r)  # frozen bases
        return r * n + n * min(i, o)  # lambda (r x n) + gamma (n x d_min)

    got = count("randlora", rank=32, max_full_rank=1024)
    assert got == _per_block(lambda i, o: formula(32, i, o)) and _millions(got) == 23.30
    assert _millions(count("randlora", rank=8)) == 92.50  # the sweep's rank: 4x the bases


def test_melora_at_the_study_total_rank_trains_as_many_as_lora(count):
    study = study_settings(get_variant_class("melora"))
    assert study["rank"] == 16 and study["options"]["blocks"] == 2
    # n mini-LoRAs of rank r/n on in/n -> out/n slices: r (in + out) / n
    got = count("melora", rank=16, blocks=2)
    assert got == _per_block(lambda i, o: 16 * (i + o) // 2)
    assert _millions(got) == 20.97


def test_a_variant_off_its_study_rank_warns_once_naming_the_study_setting():
    from lorasweep.variants import study

    study._warned.discard(("denselora", 12))  # once per process: other tests may have warned
    cls = get_variant_class("denselora")
    with pytest.warns(StudySettingWarning, match=r"rank 192, alpha 384") as caught:
        cls(rank=12, alpha=24)
        cls(rank=12, alpha=24)
    assert len([w for w in caught if w.category is StudySettingWarning]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", StudySettingWarning)
        cls(rank=192, alpha=384)  # the study's setting: silent
        get_variant_class("lora")(rank=4, alpha=8)  # no study rank: silent


def test_variants_command_lists_study_settings_beside_defaults():
    import json

    from typer.testing import CliRunner

    from lorasweep.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["variants", "--json"])
    assert result.exit_code == 0, result.output
    entries = {e["key"]: e for e in json.loads(result.output)}
    assert entries["denselora"]["defaults"]["rank"] == 8
    assert entries["denselora"]["study"]["rank"] == 192
    assert entries["randlora"]["study"]["rank"] == 32
    assert entries["melora"]["study"]["rank"] == 16
    assert entries["adalora"]["study"]["options"]["init_r"] == 12
    assert entries["adalora"]["defaults"]["options"]["init_r"] == 0
    assert entries["loramoe"]["study"]["options"]["num_experts"] == 8
    for key, entry in entries.items():  # every option of the study is a real option
        assert set(entry["study"]["options"]) == set(entry["defaults"]["options"]), key

    table = runner.invoke(app, ["variants"])
    assert table.exit_code == 0, table.output
    assert "rank 192" in table.output and "rank 32" in table.output
    assert "[tanh(tanh(" in table.output  # a formula in brackets is printed, not eaten as markup


# ------------------------------------------------ the reference code's conventions, as options
def _layer(key: str, rank: int = 8, alpha: float = 16.0, **options):
    model = torch.nn.Sequential(torch.nn.Linear(64, 48))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StudySettingWarning)
        lorasweep.apply_variant(model, key, rank=rank, alpha=alpha, target_modules=["0"], **options)
    return lorasweep.get_variant(model).layers["0"]


def test_loramoe_scales_each_expert_by_its_own_rank_and_routes_from_a_uniform_router():
    layer = _layer("loramoe", rank=8, num_experts=8)
    assert layer.expert_rank == 1 and layer.scaling == 16.0  # alpha / r_e, as the reference
    assert _layer("loramoe", rank=16, num_experts=8).scaling == 8.0  # r_e = 2
    assert _layer("loramoe", rank=8, num_experts=6).expert_rank == 1  # rounds down
    assert _layer("loramoe", rank=8, num_experts=8, scale="total").scaling == 2.0  # alpha / r
    router = layer.lora_router.detach()
    assert router.min() >= 0 and router.max() < 1 and router.std() > 0.2  # U[0, 1)
    kaiming = _layer("loramoe", router_init="kaiming").lora_router.detach()
    assert kaiming.min() < 0 and kaiming.abs().max() <= 1 / 64**0.5  # nn.Linear's bound
    goat = _layer("goat", rank=12, num_experts=8)
    assert goat.expert_rank == 2  # GOAT's reference rounds up: ceil(12 / 8)
    assert goat.lora_router.detach().min() >= 0


def test_randlora_scale_rank_restores_the_reference_scale():
    paper, reference = _layer("randlora", rank=8), _layer("randlora", rank=8, scale="rank")
    assert paper.n_bases == 6  # ceil(min(64, 48) / 8)
    assert paper.scaling == pytest.approx(2.0 / math.sqrt(6))
    assert reference.scaling == 2.0


def test_the_fidelity_table_covers_every_variant_with_its_reference_file():
    from pathlib import Path

    from lorasweep.variants import registry

    doc = (Path(__file__).resolve().parents[3] / "docs" / "fidelity.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in doc.splitlines()
            if line.startswith("| `")}
    for key, cls in registry().items():
        assert key in rows, f"docs/fidelity.md has no row for {key}"
        assert ".py`" in rows[key], f"{key}: no reference file named"
        assert "Reference" in cls.__doc__, f"{key}: the docstring does not name its reference"


@pytest.mark.parametrize("key", ["lora", "dora", "loraplus", "moslora", "loramoe", "melora",
                                 "rasa", "denselora", "relora", "aurora"])
def test_a_init_gaussian_draws_the_reference_codes_a(key):
    def a_of(**options) -> torch.Tensor:
        model = torch.nn.Sequential(torch.nn.Linear(256, 256))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StudySettingWarning)
            lorasweep.apply_variant(model, key, rank=32, alpha=64, target_modules=["0"],
                                    **options)
        variant = lorasweep.get_variant(model)
        return torch.cat([p.detach().flatten() for n, p in variant.adapter_parameters()
                          if n.split(".")[-1] in ("lora_A", "lora_A_shared")])  # RaSA's pool too

    gaussian, kaiming = a_of(a_init="gaussian"), a_of()
    assert gaussian.numel() >= 256 * 16  # every random A of the layer (and shared pools)
    # N(0, 1/in) with the layer's full in (MELoRA's blocks included), as the reference code
    assert gaussian.std().item() == pytest.approx(1 / 16, rel=0.05)
    assert gaussian.abs().max() > 1 / 16  # unbounded, unlike Kaiming-uniform
    bound = 1 / (256 // (2 if key == "melora" else 1)) ** 0.5  # MELoRA: block fan-in in/2
    assert kaiming.abs().max() <= bound
    assert kaiming.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)


def test_the_cli_prints_a_study_warning_as_one_line(capsys):
    import warnings as w

    from lorasweep import cli
    from lorasweep.variants import study

    saved = w.showwarning
    try:
        cli._plain_warnings()
        with w.catch_warnings():
            w.simplefilter("always")
            w.showwarning = w.showwarning  # catch_warnings restores it afterwards
            study._warned.discard(("melora", 6))  # once per process: other tests may have warned
            get_variant_class("melora")(rank=6, alpha=12)
    finally:
        w.showwarning = saved
    err = capsys.readouterr().err
    assert "warning: melora runs at rank 6, but the study ran it at rank 16" in " ".join(err.split())
    assert ".py:" not in err  # no file:line dump
