"""Image-classification tasks: the table, image folders on disk, CLIP preprocessing, the CLIP
classifier builder (targets, head, loss), scoring with an oracle model, errors, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import hub_unreachable, sweep_one_point
from PIL import Image

from lorasweep.config import TrainConfig
from lorasweep.tasks import TaskError, get_task, task_registry
from lorasweep.tasks.image import IMAGE_LRS, IMAGE_TASKS
from lorasweep.train.model import load_model
from lorasweep.variants import apply_variant
from lorasweep.variants.inject import resolve_targets

CLASSES = ("AnnualCrop", "Forest", "River")


def write_images(root: Path, per_class=(("train", 4), ("test", 2)), classes=CLASSES) -> Path:
    """Tiny random RGB PNGs in DIR/<split>/<class>/, sizes varying (the processor crops)."""
    rng = np.random.default_rng(0)
    for split, n in per_class:
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (20 + 4 * c, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    if (root / "train" / classes[0]).is_dir():
        (root / "train" / classes[0] / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("eurosat"))


@pytest.fixture(scope="module")
def processor(tiny_clip_dir):
    from lorasweep.tasks.image_model import image_processor

    return image_processor(str(tiny_clip_dir))


def test_table_follows_the_study():
    assert IMAGE_TASKS == ("ic-cars", "ic-dtd", "ic-eurosat", "ic-gtsrb", "ic-resisc45",
                           "ic-sun397", "ic-svhn")
    classes = {"ic-cars": 196, "ic-dtd": 47, "ic-eurosat": 10, "ic-gtsrb": 43,
               "ic-resisc45": 45, "ic-sun397": 397, "ic-svhn": 10}
    for key in IMAGE_TASKS:
        cls = task_registry()[key]
        assert (cls.metric, cls.model_kind, cls.num_labels) == (
            "accuracy", "image-classification", classes[key])
        assert cls.default_model == "openai/clip-vit-base-patch16" and cls.default_lrs == IMAGE_LRS
        TrainConfig(**cls.default_train).validate()
    assert IMAGE_LRS == (1e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3)


def test_load_from_image_folders(image_dir):
    task = get_task("ic-eurosat", data_dir=str(image_dir))
    data = task.load()
    assert task.class_names == list(CLASSES)
    assert (len(data.train), len(data.validation), len(data.test)) == (11, 1, 6)  # 10% held out
    assert {e["label"] for e in data.train + data.validation} == {0, 1, 2}
    assert all(Path(e["path"]).suffix == ".png" for e in data.train)  # notes.txt skipped
    again = get_task("ic-eurosat", data_dir=str(image_dir)).load()
    assert again.validation == data.validation  # seeded: part of the task
    same = get_task("ic-eurosat", data_dir=str(image_dir), holdout=0).load()
    assert same.validation is same.test and len(same.train) == 12
    assert len(get_task("ic-eurosat", data_dir=str(image_dir), eval_limit=2).load().test) == 2


def test_a_validation_folder_replaces_the_holdout(tmp_path):
    root = write_images(tmp_path, (("train", 2), ("test", 1), ("validation", 1)))
    data = get_task("ic-dtd", data_dir=str(root)).load()
    assert (len(data.train), len(data.validation), len(data.test)) == (6, 3, 3)


def test_collate_uses_clip_preprocessing(image_dir, processor):
    task = get_task("ic-eurosat", data_dir=str(image_dir))
    data = task.load()
    batch = task.collate(processor, data.train[:3], max_length=0)
    assert list(batch) == ["pixel_values", "labels"]  # pixels first: the loop counts batch rows
    assert batch["pixel_values"].shape == (3, 3, 32, 32)  # resized and centre-cropped
    assert batch["pixel_values"].dtype == torch.float32
    assert -3 < float(batch["pixel_values"].mean()) < 3  # normalised with CLIP's mean and std
    assert batch["labels"].tolist() == [e["label"] for e in data.train[:3]]


def test_builder_gives_a_clip_classifier_with_default_targets(image_dir, tiny_clip_dir):
    task = get_task("ic-eurosat", data_dir=str(image_dir))
    data = task.load()
    loaded = load_model(str(tiny_clip_dir), task, seed=0)
    model = loaded.model
    assert loaded.heads == ["classifier"] and model.classifier.out_features == 10
    assert model.config.model_type == "clip_vision_model"
    targets = resolve_targets(model, None)
    assert len(targets) == 4 and {t.rsplit(".", 1)[1] for t in targets} == {"q_proj", "v_proj"}
    apply_variant(model, "lora", rank=2, alpha=4, modules_to_save=loaded.heads)
    out = model(**task.collate(loaded.tokenizer, data.train[:4], 0))
    assert out.logits.shape == (4, 10) and torch.isfinite(out.loss)
    out.loss.backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert any("classifier" in n for n in trained) and any("q_proj" in n for n in trained)
    assert not any("embeddings" in n for n in trained)  # the tower stays frozen
    reloaded = load_model(str(tiny_clip_dir), task, seed=0).model  # the head is seeded
    assert torch.equal(reloaded.classifier.weight, load_model(str(tiny_clip_dir), task, 0)
                       .model.classifier.weight)


def test_builder_reads_the_vision_tower_of_a_full_clip_checkpoint(tmp_path):
    from helpers import make_tiny_clip
    from transformers import CLIPModel

    folder = make_tiny_clip(tmp_path / "clip", full=True)
    model = load_model(str(folder), get_task("ic-svhn"), seed=0).model
    full = CLIPModel.from_pretrained(folder)
    assert torch.equal(model.vision.encoder.layers[1].self_attn.q_proj.weight,
                       full.vision_model.encoder.layers[1].self_attn.q_proj.weight)


class _Oracle(torch.nn.Module):
    """Answers from a table keyed by the image's pixels: tests evaluate()'s bookkeeping."""

    def __init__(self, answers: dict[bytes, int]):
        super().__init__()
        self.answers = answers
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, pixel_values, labels=None):
        labels = torch.tensor([self.answers[p.numpy().tobytes()] for p in pixel_values])
        return type("Out", (), {"logits": torch.nn.functional.one_hot(labels, 10).float()})()


def test_gold_answers_score_one_and_constant_answers_score_low(image_dir, processor):
    task = get_task("ic-eurosat", data_dir=str(image_dir))
    examples = task.load().test

    def score(answer):
        answers = {task.collate(processor, [e], 0)["pixel_values"][0].numpy().tobytes(): answer(e)
                   for e in examples}
        return task.evaluate(_Oracle(answers), processor, examples, 4, 0, torch.no_grad)

    assert score(lambda e: e["label"]) == 1.0
    assert score(lambda e: 0) == pytest.approx(1 / 3)
    assert score(lambda e: (e["label"] + 1) % 3) == 0.0


def test_missing_folders_name_the_layout(tmp_path):
    with pytest.raises(TaskError) as err:
        get_task("ic-gtsrb", data_dir=str(tmp_path))
    message = str(err.value)
    for part in (str(tmp_path / "train"), str(tmp_path / "test"), "DIR/train/<class>/*.png",
                 "--set task.data_dir=DIR"):
        assert part in message


def test_unknown_test_class_and_too_many_classes_are_errors(tmp_path):
    root = write_images(tmp_path / "a", (("train", 1),))
    write_images(root, (("test", 1),), classes=("Lake",))
    with pytest.raises(TaskError, match=r"class 'Lake' is not a folder of train/"):
        get_task("ic-eurosat", data_dir=str(root)).load()
    many = write_images(tmp_path / "b", (("train", 1), ("test", 1)),
                        classes=tuple(f"c{i:02d}" for i in range(11)))
    with pytest.raises(TaskError, match=r"11 class folders; ic-eurosat has 10 classes"):
        get_task("ic-eurosat", data_dir=str(many)).load()


def test_unreachable_hub_names_the_local_layout(monkeypatch):
    hub_unreachable(monkeypatch, "tanganke/resisc45")
    with pytest.raises(TaskError) as err:
        get_task("ic-resisc45").load()
    for part in ("tanganke/resisc45", "Couldn't reach", "DIR/train/<class>", "DIR/test/<class>"):
        assert part in str(err.value)


def test_end_to_end_sweep_records_the_metric(tmp_path, image_dir, tiny_clip_dir):
    trial = sweep_one_point(tmp_path, tiny_clip_dir, "ic-eurosat", image_dir)
    assert 0.0 <= trial.user_attrs["test_accuracy"] <= 1.0
    run_dir = Path(trial.user_attrs["run_dir"])
    assert (run_dir / "adapter").is_dir()
