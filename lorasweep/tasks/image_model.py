"""The ``image-classification`` model: CLIP's vision tower plus a linear head (torch imported
here, not by the task module, so listing tasks stays light)."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["CLIPImageClassifier", "image_processor", "image_processor_class"]


class CLIPImageClassifier(nn.Module):
    """CLIP's vision tower plus a linear head over its pooled embedding.

    ``logits = classifier(post_layernorm(CLS token))``, the loss cross-entropy. The head is a
    plain ``nn.Linear`` (hidden size -> classes) with PyTorch's default random init, seeded by
    the trial's seed, and trained fully (the builder returns it in ``heads``, so it is saved with
    the adapter). It is not zero-shot initialised from class-name prompts (that needs CLIP's
    text tower; not implemented). ``config`` is the vision config (``model_type``
    ``clip_vision_model``), so the default LoRA targets are the attention's ``q_proj`` and
    ``v_proj``; the tower's modules are under ``vision.``.
    """

    def __init__(self, vision: nn.Module, num_labels: int):
        super().__init__()
        self.vision = vision
        self.config = vision.config
        param = next(vision.parameters())
        self.classifier = nn.Linear(vision.config.hidden_size, num_labels,
                                    device=param.device, dtype=param.dtype)

    def forward(self, pixel_values, labels=None):
        from transformers.modeling_outputs import ImageClassifierOutput

        logits = self.classifier(self.vision(pixel_values=pixel_values).pooler_output)
        loss = None if labels is None else nn.functional.cross_entropy(logits.float(), labels)
        return ImageClassifierOutput(loss=loss, logits=logits)

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        self.vision.gradient_checkpointing_enable(**kwargs)

    def enable_input_require_grads(self) -> None:
        self.vision.enable_input_require_grads()


def image_processor_class() -> type:
    """CLIP's image processor with the PIL backend: the same pixels on every machine, with or
    without torchvision."""
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers < 5: CLIPImageProcessor is the PIL one
        from transformers import CLIPImageProcessor as Processor
    return Processor


def image_processor(path: str):
    """The checkpoint's CLIP image processor (its resize, crop and normalisation settings)."""
    return image_processor_class().from_pretrained(path)
