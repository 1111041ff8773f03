"""Batched, KV-cached decoding that stops every sequence as soon as its answer is written.

The prompts are sorted by length and cut into batches (less padding). A batch is left-padded
(every row continues from its own last token), its prompt is run once (only the last position's
logits are computed), then one token per step is fed with the key/value cache. After each step a
row is finished when it emitted an end token (EOS, end of turn) or when the task's
``answer_end(text)`` finds a complete answer in its text; finished rows leave the batch and the
cache at once, so the rest decode faster and nobody runs on to ``max_new_tokens`` for nothing.

Positions follow the attention mask (``position = number of real tokens before``), so a
left-padded row generates exactly what it would alone. Greedy decoding picks ``argmax``; with
``sampling = (temperature, top_p, seed)`` the next token is drawn from the nucleus (the smallest
set of most likely tokens whose probabilities sum to at least ``top_p``) of
``softmax(logits / temperature)``, with a private generator seeded from ``seed``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .. import _phase as phase

__all__ = ["decode"]


def decode(model: Any, tokenizer: Any, prompts: list[list[int]], max_new_tokens: int,
           batch_size: int, pad: int, eos: set[int], answer_end: Callable[[str], int | None],
           autocast: Any, sampling: tuple[float, float, int] | None = None) -> list[str]:
    """The generated text of each prompt (token ids), cut at its answer's end, in their order."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts = [""] * len(prompts)
    generator = None
    if sampling is not None:
        generator = torch.Generator(device=device).manual_seed(int(sampling[2]))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            phase.report("generating", 0, len(order))
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                done = _batch(model, tokenizer, [prompts[i] for i in chunk], max_new_tokens, pad,
                              eos, answer_end, autocast, sampling, generator, device,
                              (start, len(order)))
                for i, text in zip(chunk, done, strict=True):
                    texts[i] = text
    finally:
        model.train(was_training)
    return texts


def _cache_keyword(model: Any) -> str:
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _pick(logits: Any, sampling: tuple[float, float, int] | None, generator: Any) -> Any:
    import torch

    if sampling is None:
        return logits.argmax(-1)
    temperature, top_p, _ = sampling
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_probs, index = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the more likely tokens
    sorted_probs[before >= top_p] = 0.0  # keeps at least the most likely token
    choice = torch.multinomial(sorted_probs, 1, generator=generator)
    return index.gather(-1, choice).squeeze(-1)


def _batch(model: Any, tokenizer: Any, prompts: list[list[int]], max_new_tokens: int, pad: int,
           eos: set[int], answer_end: Callable[[str], int | None], autocast: Any,
           sampling: tuple[float, float, int] | None, generator: Any, device: Any,
           count: tuple[int, int] = (0, 0)) -> list[str]:
    """``count``: prompts done before this batch, and of how many (the phase's progress)."""
    import torch
    from transformers import DynamicCache

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    keyword = _cache_keyword(model)
    with autocast():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                       use_cache=True, logits_to_keep=1, **{keyword: cache}).logits[:, -1]
    nxt = positions[:, -1] + 1
    active = list(range(len(prompts)))  # batch row -> prompt index
    new: list[list[int]] = [[] for _ in prompts]
    out: list[str | None] = [None] * len(prompts)
    for step in range(max_new_tokens):
        tokens = _pick(logits, sampling, generator)
        ended = [t in eos for t in tokens.tolist()]
        for row, token, end in zip(active, tokens.tolist(), ended, strict=True):
            if not end:
                new[row].append(token)
        decoded = tokenizer.batch_decode([new[row] for row in active], skip_special_tokens=True)
        keep = []
        for r, (row, text) in enumerate(zip(active, decoded, strict=True)):
            cut = answer_end(text)
            if cut is not None:
                out[row] = text[:cut]
            elif ended[r] or step == max_new_tokens - 1:
                out[row] = text
            else:
                keep.append(r)
        if len(keep) < len(active):
            phase.report("generating", count[0] + len(prompts) - len(keep), count[1])
        if not keep:
            break
        if len(keep) < len(active):  # finished rows leave the batch and the cache
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, tokens, nxt = mask[index], tokens[index], nxt[index]
            active = [active[r] for r in keep]
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
        with autocast():
            logits = model(input_ids=tokens[:, None], attention_mask=mask,
                           position_ids=nxt[:, None], use_cache=True,
                           **{keyword: cache}).logits[:, -1]
        nxt = nxt + 1
    return [text or "" for text in out]
