"""EVA: explained variance adaptation, A on the principal components of the layer inputs."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable
from functools import partial

import torch
from torch import nn

from ._svd import check_niter, principal_components
from .base import AdapterLayer, Variant, VariantError, register

__all__ = ["Eva", "EvaLayer", "IncrementalPCA"]


@dataclasses.dataclass
class EvaOptions:
    #: Components kept per layer, ``round(rho · r)``: the most rank a layer can get.
    rho: float = 2.0
    #: Stop when consecutive components' |cosine similarity| reach this in every layer.
    tau: float = 0.9
    #: Subspace iterations of each step's randomised SVD; 0 computes the exact SVD.
    niter: int = 4
    #: "allocated": s = alpha / r_i, each layer scaled by its own rank (the reference code's);
    #: "configured": s = alpha / r for every layer (peft's adjust_scaling_factors=True).
    scale: str = "allocated"

    def validate(self) -> None:
        if self.scale not in ("allocated", "configured"):
            raise VariantError(f"eva scale must be allocated or configured, got {self.scale!r}")
        if self.rho < 1.0:
            raise VariantError(f"eva rho must be >= 1, got {self.rho}")
        if not 0.0 < self.tau <= 1.0:
            raise VariantError(f"eva tau must be in (0, 1], got {self.tau}")
        check_niter("eva", self.niter)


class IncrementalPCA:
    """Top-``k`` principal components of a stream of row batches (Ross et al. 2008, as
    scikit-learn's and peft's): each step takes the SVD of ``[diag(S) V ; X - mean_X ;
    mean correction]``. The running mean and squared deviations are kept in fp64."""

    def __init__(self, k: int, tau: float, niter: int):
        self.k, self.tau, self.niter = k, tau, niter
        self.count, self.fits, self.max_rows = 0, 0, 0
        self.mean = self.sq_dev = self.components = self.singular = self.ratio = None
        self.converged = torch.zeros(k, dtype=torch.bool)
        self.pending: list[torch.Tensor] = []  # rows waiting until there are k of them
        self.frozen = False

    def add(self, rows: torch.Tensor) -> None:
        if self.pending:
            rows = torch.cat([*self.pending, rows])
            self.pending = []
        if rows.shape[0] < self.k:
            self.pending = [rows.clone()]
        else:
            self.fit(rows)

    def fit(self, x: torch.Tensor) -> None:
        x = x.to(torch.float32)
        if not torch.isfinite(x).all():
            raise VariantError("eva: non-finite layer inputs, the PCA cannot use them")
        n = x.shape[0]
        batch_mean = x.mean(0, dtype=torch.float64)
        centered = x - batch_mean.float()
        batch_sq_dev = centered.square().sum(0, dtype=torch.float64)
        if self.count == 0:
            stacked = centered
            self.mean, self.sq_dev = batch_mean, batch_sq_dev
        else:
            total = self.count + n
            shift = self.mean - batch_mean
            correction = (math.sqrt(self.count * n / total) * shift).float()
            stacked = torch.cat(
                [self.singular[:, None] * self.components, centered, correction[None]]
            )
            self.sq_dev = self.sq_dev + batch_sq_dev + shift.square() * (self.count * n / total)
            self.mean = self.mean - shift * (n / total)
        self.count += n
        self.max_rows = max(self.max_rows, stacked.shape[0])
        _, s, v = principal_components(stacked, min(self.k, *stacked.shape), self.niter)
        components = v.t().contiguous()
        biggest = components.abs().argmax(1)  # sign: largest entry positive (as svd_flip)
        components *= torch.sign(components[torch.arange(len(components)), biggest])[:, None]
        if self.components is not None:
            m = min(len(components), len(self.components))
            similarity = (components[:m] * self.components[:m]).sum(1).abs().cpu()
            self.converged = torch.zeros(self.k, dtype=torch.bool)
            self.converged[:m] = similarity >= self.tau
        variance = self.sq_dev.sum()
        self.ratio = s.double().square() / variance if variance > 0 else torch.zeros_like(s)
        self.components, self.singular = components, s
        self.fits += 1


class _Collector:
    """Forward pre-hooks feeding each target layer's inputs (non-pad tokens) to its PCA.

    Layers called in a row with the same input tensor (q/k/v, gate/up) share one PCA: the
    groups are found on the first batch, by tensor identity."""

    def __init__(self, layers: dict[str, AdapterLayer], k: int, tau: float, niter: int):
        self.pcas = {
            name: IncrementalPCA(min(k, layer.in_features), tau, niter)
            for name, layer in layers.items()
        }
        self.leader: dict[str, str] = {}
        self.first_pass = True
        self.mask: torch.Tensor | None = None
        self._last: tuple[torch.Tensor, str] | None = None

    def hook(self, name: str, module: nn.Module, args: tuple) -> None:
        x = args[0]
        if self.first_pass:
            same = self._last is not None and self._last[0] is x
            self.leader[name] = self._last[1] if same else name
            self._last = (x, self.leader[name])
        pca = self.pcas[name]
        if self.leader.get(name, name) != name or pca.frozen:
            return
        mask = self.mask
        if mask is not None and x.shape[:-1] == mask.shape:
            rows = x[mask.bool()]
        else:
            rows = x.reshape(-1, x.shape[-1])
        pca.add(rows.detach())

    def end_batch(self) -> None:
        self.first_pass, self._last, self.mask = False, None, None

    def groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for name in self.pcas:
            groups.setdefault(self.leader.get(name, name), []).append(name)
        return groups

    def allocate(self, budget: int) -> dict[str, int] | None:
        """The budget goes to the largest explained-variance ratios over all layers (a layer of a
        shared group competes with its own copy; ties go to the earlier layer)."""
        groups = self.groups()
        if any(self.pcas[leader].ratio is None for leader in groups):
            return None
        entries = []
        for order, name in enumerate(self.pcas):
            ratios = self.pcas[self.leader.get(name, name)].ratio.tolist()
            entries += [(-value, order, name) for value in ratios]
        entries.sort(key=lambda e: (e[0], e[1]))
        counts = Counter(name for _, _, name in entries[:budget])
        return {name: counts.get(name, 0) for name in self.pcas}

    def update_frozen(self, ranks: dict[str, int] | None) -> bool:
        """A group stops collecting once the components its ranks use have converged (and
        resumes if a rank grows past them). True when every group has stopped."""
        done = True
        for leader, members in self.groups().items():
            pca = self.pcas[leader]
            needed = pca.k if ranks is None else max(ranks[m] for m in members)
            pca.frozen = bool(pca.converged[:needed].all())
            done = done and pca.frozen
        return done


class EvaLayer(AdapterLayer):
    """``s = alpha / r_i`` with the layer's own rank (``scale="allocated"``, the reference
    code's), or ``alpha / r`` of the configured rank whatever ``r_i`` (``scale="configured"``,
    peft's ``adjust_scaling_factors=True``: ``alpha_i = alpha · r_i / r``)."""

    def __init__(self, base: nn.Linear, variant: Variant):
        super().__init__(base, variant)
        self.reference_rank = variant.rank

    @property
    def scaling(self) -> float:
        if self.options.scale == "allocated":
            return self.alpha / max(self.rank, 1)  # a rank-0 layer adds nothing anyway
        return self.alpha / self.reference_rank


@register
class Eva(Variant):
    """EVA (Paischer et al., 2024): ``A`` on the principal components of the layer's inputs.

    Forward passes over the training batches ``prepare`` is given (a trial's
    ``train.estimation_batches``, study: 64; eval mode, no gradients) feed each target layer's
    inputs, non-pad tokens only (the batch's ``attention_mask``, where present), into an
    incremental PCA keeping ``k = round(rho · r)`` components (study: rho 2). After each batch the rank budget ``r · #layers`` goes to the
    largest explained-variance ratios over all layers, so layer ``i`` gets ``0 <= r_i <= k``
    (``Σ r_i`` is the budget unless fewer components exist). A layer stops collecting once its
    top ``r_i`` components have |cosine similarity| >= ``tau`` (0.9) with the previous step's;
    the estimate stops early when all have. Then ``A_i`` = the top ``r_i`` components (orthonormal
    rows), ``B_i = 0``: the model starts as the base model with no residual. Each layer is
    scaled by its own rank, ``s_i = alpha / r_i`` (``scale="configured"``: ``alpha / r`` for
    all); a rank-0 layer has empty, frozen tensors. ``prepare`` returns the ranks, the budget
    and the early-stop step.

    Reference (``common/lora_modules/eva.py``): followed for the components (non-pad tokens,
    ``round(rho·r)`` kept, redistribution by explained-variance ratio, convergence by cosine
    similarity, unscaled components as ``A``, ``B = 0``) and the scale ``alpha / r_i`` (its
    layer sets ``lora_scaler = alpha / lora_rank`` after redistribution). Differences, beside
    those from peft below: the reference cycles the data until every layer converges and at
    least ``eva_n_steps`` steps ran; lorasweep stops at ``train.estimation_batches`` (a fixed
    cost per trial); the reference merges and deletes a rank-0 layer, lorasweep keeps it empty.

    As peft's ``get_eva_state_dict`` (its reference here), except: batches with fewer than ``k``
    tokens are pooled rather than skipped; ``|cos|`` rather than ``cos`` (sign-free); at most
    ``train.estimation_batches`` batches rather than cycling until convergence; the attention
    mask only (peft also drops ``labels == -100`` positions by default); ``rho`` is not capped.
    No peft export: peft would need per-layer ``rank_pattern``/``alpha_pattern``.
    """

    key = "eva"
    axis = "initialization"
    study = {"options": {"tau": 0.9, "rho": 2.0}}
    summary = "A on the top principal components of layer inputs; ranks by explained variance"
    layer = EvaLayer
    Options = EvaOptions
    peft_flags = None

    def prepare(self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict:
        o = self.options
        budget = self.rank * len(self.layers)
        collector = _Collector(self.layers, round(o.rho * self.rank), o.tau, o.niter)
        handles = [
            layer.register_forward_pre_hook(partial(collector.hook, name))
            for name, layer in self.layers.items()
        ]
        was_training, used, stopped = model.training, 0, None
        try:
            model.eval()
            with torch.no_grad():
                for batch in batches:
                    collector.mask = batch.get("attention_mask")
                    model(**batch)
                    collector.end_batch()
                    used += 1
                    if collector.update_frozen(collector.allocate(budget)):
                        stopped = used
                        break
        finally:
            for handle in handles:
                handle.remove()
            collector.end_batch()
            model.train(was_training)
        if used == 0:
            raise VariantError(
                "no batches for eva: it needs at least one (train.estimation_batches >= 1)"
            )
        for leader in collector.groups():
            pca = collector.pcas[leader]
            if pca.fits == 0 and pca.pending:  # fewer than k tokens in all: use what there is
                pca.fit(pca.pending.pop())
            if pca.fits == 0:
                raise VariantError(f"eva: layer {leader} saw no input in {used} batches")
        ranks = collector.allocate(budget)
        with torch.no_grad():
            for name, layer in self.layers.items():
                components = collector.pcas[collector.leader.get(name, name)].components
                layer.set_rank(ranks[name])
                layer.lora_A.copy_(components[: ranks[name]])
        return {
            "batches": used,
            "converged": stopped is not None,
            "early_stop_step": stopped,
            "ranks": ranks,
            "budget": {"target": budget, "used": sum(ranks.values())},
            "pca_groups": len(collector.groups()),
            "peak_extra_memory_mb": _memory_mb(collector),
        }


def _memory_mb(collector: _Collector) -> float:
    """Estimate: every PCA's state, plus the largest stacked matrix twice (it and its SVD)."""
    state, step = 0, 0
    for leader in collector.groups():
        pca = collector.pcas[leader]
        d = pca.components.shape[1]
        state += pca.k * d * 4 + 2 * d * 8
        step = max(step, 2 * pca.max_rows * d * 4)
    return round((state + step) / 2**20, 3)
