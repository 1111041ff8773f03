"""Variants whose layers share tensors: RaSA, DenseLoRA, RandLoRA.

The contract suite covers forward, backward, save/load, merge and bf16 for them; here: the
parameter counts of the papers, which tensors are shared (and by whom), gradient accumulation
into shared tensors, and each method's own promises.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_bert, tiny_llama
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

import lorasweep
from lorasweep.variants import VariantError, get_variant_class
from lorasweep.variants.base import module_type
from lorasweep.variants.randlora import ScaledBases

RANK, ALPHA = 4, 8.0
SHARED = ["rasa", "denselora", "randlora"]
#: Trainable tensors shared by the layers of one module type (RandLoRA shares frozen bases only).
SHARED_TRAINABLE = {"rasa": ["lora_A_shared", "lora_B_shared"], "denselora": ["lora_A", "lora_B"]}
#: Per-layer trainable tensors.
PRIVATE = {
    "rasa": ["lora_A", "lora_B", "lora_E"],
    "denselora": ["lora_M"],
    "randlora": ["lora_lambda", "lora_gamma"],
}


def _llama() -> nn.Module:
    """2 layers; q_proj, o_proj 32 -> 32, k_proj, v_proj 32 -> 16 (default targets q, k, v, o)."""
    return tiny_llama(body=True, vocab_size=50, intermediate_size=48, max_position_embeddings=32)


def _bert() -> nn.Module:
    """2 layers; all-linear gives three kinds of "dense" (32->32, 32->48, 48->32)."""
    return tiny_bert(body=True, vocab_size=50, intermediate_size=48, max_position_embeddings=32)


MODELS = {"llama": (_llama, None), "bert": (_bert, "all-linear")}
IDS = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(1))


def _adapt(key: str, model: str = "llama", **options):
    build, targets = MODELS[model]
    net = lorasweep.apply_variant(
        build(), key, rank=RANK, alpha=ALPHA, target_modules=targets, **options
    )
    return net, lorasweep.get_variant(net)


def _types(variant) -> dict[str, list[str]]:
    types: dict[str, list[str]] = {}
    for name in variant.layers:
        types.setdefault(module_type(name), []).append(name)
    return types


@torch.no_grad()
def _perturb(variant, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    for _, p in variant.adapter_parameters():
        p.add_(0.1 * torch.randn(p.shape, generator=g))


def _loss(model: nn.Module) -> torch.Tensor:
    return model(input_ids=IDS).last_hidden_state.pow(2).mean()


# ------------------------------------------------------------------------ parameter counts
def _paper_count(key: str, rank: int, types: dict[str, list[tuple[int, int]]], **options) -> int:
    """The papers' counts, per module type of ``L`` layers ``in -> out``."""
    total = 0
    for shapes in types.values():
        (i, o), n_layers = shapes[0], len(shapes)
        if key == "rasa":  # private (r-k)(i+o) per layer, shared kL(i+o), E of r-k+kL per layer
            k = options.get("k", 1)
            total += n_layers * (rank - k) * (i + o) + k * n_layers * (i + o)
            total += n_layers * (rank - k + k * n_layers)
        elif key == "denselora":  # shared A r x i, B o x r; one r x r M per layer
            total += rank * (i + o) + n_layers * rank * rank
        else:  # randlora: lambda r x n and gamma n x min(i, o) per layer
            n = math.ceil(min(i, o, options.get("max_full_rank", 1024)) / rank)
            total += n_layers * n * (rank + min(i, o))
    return total


@pytest.mark.parametrize(
    "key, options",
    [("rasa", {}), ("rasa", {"k": 2}), ("denselora", {}), ("randlora", {}),
     ("randlora", {"max_full_rank": 8})],
)
@pytest.mark.parametrize("model", list(MODELS))
def test_trainable_parameters_match_the_paper(key, options, model):
    net, variant = _adapt(key, model, **options)
    types = {
        kind: [(variant.layers[n].in_features, variant.layers[n].out_features) for n in names]
        for kind, names in _types(variant).items()
    }
    expected = _paper_count(key, RANK, types, **options)
    assert sum(p.numel() for _, p in variant.adapter_parameters()) == expected
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == expected


def test_bert_all_linear_gives_one_type_per_block_position():
    _, variant = _adapt("denselora", "bert")
    assert sorted(_types(variant)) == [
        "encoder.layer.*.attention.output.dense",
        "encoder.layer.*.attention.self.key",
        "encoder.layer.*.attention.self.query",
        "encoder.layer.*.attention.self.value",
        "encoder.layer.*.intermediate.dense",
        "encoder.layer.*.output.dense",
    ]


# -------------------------------------------------------------------------------- sharing
def _shared_objects(key: str, layer) -> list[object]:
    if key == "randlora":
        return [layer.randlora_bases, layer.randlora_bases.A, layer.randlora_bases.B]
    return [getattr(layer, attr) for attr in SHARED_TRAINABLE[key]]


@pytest.mark.parametrize("key", SHARED)
@pytest.mark.parametrize("model", list(MODELS))
def test_one_type_shares_the_same_objects_and_other_types_do_not(key, model):
    net, variant = _adapt(key, model)
    net.to(torch.float64)  # the training loop moves the model after wrapping: sharing survives
    types = _types(variant)
    assert all(len(names) == 2 for names in types.values())
    owner: dict[int, str] = {}
    for kind, names in types.items():
        first, second = (variant.layers[n] for n in names)
        for a, b in zip(_shared_objects(key, first), _shared_objects(key, second), strict=True):
            assert a is b, f"{kind}: layers do not share {type(a).__name__}"
            assert owner.setdefault(id(a), kind) == kind, f"{kind} shares {owner[id(a)]}'s"
            if isinstance(a, torch.Tensor):
                assert a.dtype == torch.float64
        for attr in PRIVATE[key]:
            assert getattr(first, attr) is not getattr(second, attr), f"{attr} must be private"
    params = variant.adapter_parameters()
    assert len(params) == len({id(p) for _, p in params}), "a shared tensor is listed twice"
    shared_per_type = len(SHARED_TRAINABLE.get(key, []))
    expected = len(types) * shared_per_type + len(variant.layers) * len(PRIVATE[key])
    assert len(params) == expected
    assert len(variant.param_groups(1e-3)[0]["params"]) == expected


@pytest.mark.parametrize("key", ["rasa", "denselora"])
def test_gradients_of_every_layer_accumulate_into_the_shared_tensors(key):
    net, variant = _adapt(key)
    _perturb(variant)
    _loss(net).backward()
    full = {
        (kind, attr): getattr(variant.layers[names[0]], attr).grad.clone()
        for kind, names in _types(variant).items()
        for attr in SHARED_TRAINABLE[key]
    }
    for (kind, attr), grad in full.items():
        names = _types(variant)[kind]
        shared = getattr(variant.layers[names[0]], attr)
        parts = []
        for only in names:  # every other layer of the type sees a frozen copy of the tensor
            frozen = nn.Parameter(shared.detach().clone(), requires_grad=False)
            for other in names:
                if other != only:
                    setattr(variant.layers[other], attr, frozen)
            shared.grad = None
            _loss(net).backward()
            parts.append(shared.grad.clone())
            for other in names:
                setattr(variant.layers[other], attr, shared)
        assert all(part.abs().sum() > 0 for part in parts), f"{kind}.{attr}: a layer adds nothing"
        torch.testing.assert_close(sum(parts), grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("key", SHARED)
def test_layers_of_one_type_with_different_shapes_are_refused(key):
    class Block(nn.Module):
        def __init__(self, out: int):
            super().__init__()
            self.proj = nn.Linear(8, out)

    model = nn.Module()
    model.blocks = nn.ModuleList([Block(8), Block(4)])
    with pytest.raises(VariantError, match=r"blocks\.\*\.proj have different shapes"):
        lorasweep.apply_variant(model, key, rank=2, target_modules=["proj"])


# ----------------------------------------------------------------------------------- RaSA
@pytest.mark.parametrize("k", [1, 2, 3])
def test_rasa_scales_start_at_half_alpha_per_part_and_rank_grows(k):
    net, variant = _adapt("rasa", k=k)
    for names in _types(variant).values():
        shared_rows = k * len(names)
        for name in names:
            layer = variant.layers[name]
            expected = torch.tensor(
                [ALPHA / 2 / (RANK - k)] * (RANK - k) + [ALPHA / 2 / shared_rows] * shared_rows
            )
            torch.testing.assert_close(layer.lora_E.detach(), expected, atol=0, rtol=0)
            assert layer.lora_A.shape == (RANK - k, layer.in_features)
            assert layer.lora_A_shared.shape == (shared_rows, layer.in_features)
            assert layer.lora_B_shared.shape == (layer.out_features, shared_rows)
            assert not layer.lora_B_shared.any() and not layer.lora_B.any()
    _perturb(variant)
    for layer in variant.layers.values():  # each layer adapts with rank r - k + kL (here L = 2)
        rank = torch.linalg.matrix_rank(layer.delta_weight(), rtol=1e-4)
        assert rank == min(RANK - k + 2 * k, layer.out_features, layer.in_features)


def test_rasa_output_is_the_docstring_formula():
    _, variant = _adapt("rasa")
    _perturb(variant)
    layer = variant.layers["layers.1.self_attn.k_proj"]
    x = torch.randn(5, layer.in_features)
    a = torch.cat([layer.lora_A, layer.lora_A_shared])
    b = torch.cat([layer.lora_B, layer.lora_B_shared], dim=1)
    with torch.no_grad():
        expected = layer.base(x) + x @ (b @ torch.diag(layer.lora_E) @ a).t()
        torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("k", [0, 4, 5])
def test_rasa_k_must_be_between_zero_and_the_rank(k):
    with pytest.raises(VariantError, match="rasa k"):
        _adapt("rasa", k=k)


def test_rasa_layers_need_the_plan():
    variant = get_variant_class("rasa")(RANK, ALPHA)
    with pytest.raises(VariantError, match="apply_variant"):
        variant.build_layer("0", nn.Linear(4, 4))


# ------------------------------------------------------------------------------ DenseLoRA
def test_denselora_starts_exactly_at_zero_and_is_nonlinear():
    _, variant = _adapt("denselora")
    layer = variant.layers["layers.0.self_attn.q_proj"]
    x = torch.randn(6, layer.in_features)
    with torch.no_grad():
        assert torch.equal(layer.adapter_output(x), torch.zeros(6, layer.out_features))
    _perturb(variant)
    with torch.no_grad():
        once, twice = layer.adapter_output(x), layer.adapter_output(2 * x)
        summed = layer.adapter_output(x) + layer.adapter_output(x.flip(0))
        assert not torch.allclose(twice, 2 * once, atol=1e-4)
        assert not torch.allclose(layer.adapter_output(x + x.flip(0)), summed, atol=1e-4)
        s = ALPHA / RANK
        expected = s * F.gelu(F.gelu(x @ layer.lora_A.t()) @ layer.lora_M.t() @ layer.lora_B.t())
        torch.testing.assert_close(once, expected)
    with pytest.raises(VariantError, match="nonlinear"):
        layer.merge()


# ------------------------------------------------------------------------------- RandLoRA
def test_randlora_update_has_more_than_rank_r():
    net, variant = _adapt("randlora")
    net.to(torch.float64)  # the update is full rank but ill-conditioned: rank in float64
    _perturb(variant)
    for layer in variant.layers.values():
        d_min = min(layer.in_features, layer.out_features)
        assert layer.n_bases == math.ceil(d_min / RANK)
        assert layer.scaling == pytest.approx(ALPHA / RANK / math.sqrt(layer.n_bases))
        assert torch.linalg.matrix_rank(layer.delta_weight()) == d_min > RANK


def test_randlora_bases_are_frozen_unsaved_and_identical_after_reload(tmp_path):
    net, variant = _adapt("randlora")
    types = _types(variant)
    bases = {kind: variant.layers[names[0]].randlora_bases for kind, names in types.items()}
    for b in bases.values():
        for t in (b.A, b.B):
            assert not t.requires_grad
            assert all(t is not p for p in net.parameters())
        assert b.A.std().item() == pytest.approx(1.0) and b.B.std().item() == pytest.approx(1.0)
    _perturb(variant)
    lorasweep.save_adapter(net, tmp_path)
    saved = load_file(str(tmp_path / "lorasweep_adapter.safetensors"))
    assert saved and not any("randlora_bases" in k for k in saved)
    torch.manual_seed(1234)  # the bases do not depend on the global random stream
    fresh = lorasweep.get_variant(lorasweep.load_adapter(_llama(), tmp_path))
    for kind, names in _types(fresh).items():
        assert torch.equal(fresh.layers[names[0]].randlora_bases.A, bases[kind].A)
        assert torch.equal(fresh.layers[names[0]].randlora_bases.B, bases[kind].B)
    other = lorasweep.get_variant(
        lorasweep.apply_variant(_llama(), "randlora", rank=RANK, alpha=ALPHA, seed=1)
    )
    assert not torch.equal(
        next(iter(other.layers.values())).randlora_bases.A,
        next(iter(variant.layers.values())).randlora_bases.A,
    )


@pytest.mark.parametrize("name", ["layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj"])
def test_randlora_weight_and_token_paths_agree_with_the_sum_over_bases(name):
    _, variant = _adapt("randlora")
    _perturb(variant)
    layer = variant.layers[name]
    bases, n = layer.randlora_bases, layer.n_bases
    b_i = bases.B.reshape(bases.B.shape[0], n, RANK)
    dw = sum(  # the docstring, one base at a time
        b_i[:, i] @ torch.diag(lam) @ bases.A[i] @ torch.diag(gamma)
        for i, (lam, gamma) in enumerate(zip(layer.lora_lambda.t(), layer.lora_gamma, strict=True))
    )
    dw = layer.scaling * (dw if layer.in_features <= layer.out_features else dw.t())
    with torch.no_grad():
        torch.testing.assert_close(layer.delta_weight(), dw)
        few, many = torch.randn(1, layer.in_features), torch.randn(4000, layer.in_features)
        assert not layer._weight_path(few) and layer._weight_path(many)
        for x in (few, many):
            torch.testing.assert_close(layer(x), layer.base(x) + x @ dw.t(), atol=1e-5, rtol=1e-5)


def test_randlora_scaled_bases_backward_matches_autograd():
    g = torch.Generator().manual_seed(0)
    bases = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    lam = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    gamma = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ScaledBases.apply, (bases, lam, gamma))
