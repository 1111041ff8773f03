"""The study's seven image-classification tasks on CLIP ViT-B/16 (model kind ``image-classification``).

Data: the Hub datasets listed in ``_TABLE`` (parquet, columns ``image`` and ``label``, splits
``train`` and ``test``) through ``datasets.load_dataset``, or, with ``--set task.data_dir=DIR``,
an image folder per split (the ImageFolder convention; class index = rank of the folder name in
sorted order)::

    DIR/train/<class name>/*.png|jpg|jpeg|...
    DIR/test/<class name>/...
    DIR/validation/<class name>/...   optional

Splits. The datasets have no validation split: a seeded ``holdout`` fraction of train (10%, at
most 5,000 images) is held out as validation, which the sweep selects on, and the test split is
reported (a ``DIR/validation`` folder, when present, is used instead). ``holdout=0`` scores the
test split as validation too (the same list). Examples reference their image (a file path, or a
row of the Hub split) and are decoded per batch, so no split is held in memory as pixels.

Preprocessing: the checkpoint's own ``CLIPImageProcessor`` (resize the short side, centre crop,
normalise with CLIP's mean and std), PIL backend; no augmentation. Metric: top-1 accuracy.

Budget. The study's notes fix only the learning-rate grid for these tasks; the default budget is
the fine-tuning recipe this seven-dataset suite is known from (task arithmetic, Ilharco et al.:
about 2,000 steps at batch 128), with the study's shared cosine schedule and no weight decay.
Override it per sweep (``--steps``, ``--set train.batch_size=...``, ``train.grad_accum``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from ._hub import hub_errors
from ._splits import check_holdout, hold_out
from .base import TaskData, TaskError, TaskOptions, register_task
from .classification import PredictingTask

__all__ = ["IMAGE_LRS", "IMAGE_TASKS", "ImageOptions", "ImageTask"]

#: The study's image-classification learning-rate grid.
IMAGE_LRS = (1e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3)
_MAX_HOLDOUT = 5_000
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


@dataclasses.dataclass(frozen=True)
class _Spec:
    key: str
    hub_id: str
    hub_config: str | None
    num_classes: int
    summary: str


_TABLE = (
    _Spec("ic-cars", "tanganke/stanford_cars", None, 196, "Stanford Cars: 196 car models"),
    _Spec("ic-dtd", "tanganke/dtd", None, 47, "DTD: 47 describable textures"),
    _Spec("ic-eurosat", "tanganke/eurosat", None, 10, "EuroSAT: 10 land-use classes (Sentinel-2)"),
    _Spec("ic-gtsrb", "tanganke/gtsrb", None, 43, "GTSRB: 43 German traffic signs"),
    _Spec("ic-resisc45", "tanganke/resisc45", None, 45, "RESISC45: 45 remote-sensing scenes"),
    _Spec("ic-sun397", "tanganke/sun397", None, 397, "SUN397: 397 scene categories"),
    _Spec("ic-svhn", "ufldl-stanford/svhn", "cropped_digits", 10, "SVHN: house-number digits"),
)
#: Every image-classification task key (the ``ic`` task group).
IMAGE_TASKS = tuple(spec.key for spec in _TABLE)


@dataclasses.dataclass
class ImageOptions(TaskOptions):
    #: Fraction of train held out (seeded, at most 5,000 images) as the validation split.
    holdout: float = 0.1


class ImageTask(PredictingTask):
    """One image-classification task; subclasses only set ``spec`` (see the module docstring).

    Examples are ``{"path": str, "label": int}`` (local files) or ``{"split": str, "row": int,
    "label": int}`` (a row of the Hub split this task object loaded).
    """

    spec: ClassVar[_Spec]
    Options = ImageOptions
    metric = "accuracy"
    model_kind = "image-classification"
    default_model = "openai/clip-vit-base-patch16"
    worst_score = 0.0
    default_lrs = IMAGE_LRS
    default_train: ClassVar[dict[str, Any]] = {
        "steps": 2000, "epochs": None, "batch_size": 128, "schedule": "cosine",
        "warmup_ratio": 0.03, "weight_decay": 0.0, "eval_every": 500,
    }

    def __init__(self, **options: Any):
        super().__init__(**options)
        check_holdout(self.options.holdout)
        self.class_names: list[str] = []
        self._hub: dict[str, Any] = {}

    # ------------------------------------------------------------------ data

    def _layout_hint(self) -> str:
        return (
            f"put {self.spec.summary.split(':')[0]} in image folders DIR/train/<class>/*.png and "
            "DIR/test/<class>/*.png (optional DIR/validation/<class>/; jpg and other PIL formats "
            "too) and pass --set task.data_dir=DIR"
        )

    def check_available(self) -> None:
        if self.options.data_dir is None:
            return  # the Hub (or its local cache): only load() can tell
        root = Path(self.options.data_dir).expanduser()
        missing = [str(root / s) for s in ("train", "test") if not (root / s).is_dir()]
        if missing:
            raise TaskError(
                f"{self.key}: missing folder {' and '.join(missing)}: {self._layout_hint()}"
            )

    def _folder(self, folder: Path, classes: list[str]) -> list[dict[str, Any]]:
        rows = []
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            if class_dir.name not in classes:
                raise TaskError(f"{class_dir}: class {class_dir.name!r} is not a folder of train/")
            label = classes.index(class_dir.name)
            rows += [{"path": str(p), "label": label} for p in sorted(class_dir.iterdir())
                     if p.suffix.lower() in _IMAGE_SUFFIXES]
        if not rows:
            raise TaskError(f"{folder} has no images: {self._layout_hint()}")
        return rows

    def _load_folders(self) -> tuple[list, list | None, list]:
        self.check_available()
        root = Path(self.options.data_dir).expanduser()
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        if len(classes) > self.num_labels:
            raise TaskError(f"{root / 'train'} has {len(classes)} class folders; "
                            f"{self.key} has {self.num_labels} classes")
        self.class_names = classes
        validation = None
        if (root / "validation").is_dir():
            validation = self._folder(root / "validation", classes)
        train, test = self._folder(root / "train", classes), self._folder(root / "test", classes)
        return train, validation, test

    def _load_hub(self) -> tuple[list, None, list]:
        with hub_errors(self.key, self.spec.hub_id, f"without network, {self._layout_hint()}"):
            import datasets

            splits = datasets.load_dataset(self.spec.hub_id, self.spec.hub_config)
            self._hub = {"train": splits["train"], "test": splits["test"]}
            feature = self._hub["train"].features["label"]
            labels = {name: list(split["label"]) for name, split in self._hub.items()}
        self.class_names = list(getattr(feature, "names", None) or [])
        rows = {name: [{"split": name, "row": i, "label": int(y)} for i, y in enumerate(ys)]
                for name, ys in labels.items()}
        return rows["train"], None, rows["test"]

    def load(self) -> TaskData:
        if self.options.data_dir is None:
            train, validation, test = self._load_hub()
        else:
            train, validation, test = self._load_folders()
        bad = [e["label"] for e in train + test if not 0 <= e["label"] < self.num_labels]
        if bad:
            raise TaskError(f"{self.key}: label {bad[0]} is not a class 0..{self.num_labels - 1}")
        test = self.limited(test)
        if validation is None and self.options.holdout > 0 and len(train) > 1:
            train, validation = hold_out(train, self.options.holdout, most=_MAX_HOLDOUT)
        validation = test if validation is None else self.limited(validation)
        return TaskData(train=train, validation=validation, test=test)

    def length(self, example: dict[str, Any]) -> int:
        return 0  # every image becomes the same number of patches

    def image(self, example: dict[str, Any]):
        """The example's image as RGB (PIL)."""
        from PIL import Image

        if "path" in example:
            with Image.open(example["path"]) as image:
                return image.convert("RGB")
        try:
            split = self._hub[example["split"]]
        except KeyError:
            raise TaskError(f"{self.key}: call load() on this task before collate()") from None
        return split[example["row"]]["image"].convert("RGB")

    # ------------------------------------------------------------------ model io

    def collate(self, tokenizer: Any, examples: list[dict[str, Any]], max_length: int) -> dict:
        """``tokenizer`` is the model's image processor; ``max_length`` is not used."""
        import torch

        pixels = tokenizer(images=[self.image(e) for e in examples], return_tensors="pt")
        return {"pixel_values": pixels["pixel_values"],
                "labels": torch.tensor([e["label"] for e in examples], dtype=torch.long)}

def _make(spec: _Spec) -> type[ImageTask]:
    name = "Image" + spec.key.split("-", 1)[1].capitalize()
    source = spec.hub_id + (f" ({spec.hub_config})" if spec.hub_config else "")
    cls = type(name, (ImageTask,), {
        "__doc__": f"{spec.summary}. Metric: top-1 accuracy. See the module docstring.",
        "__module__": __name__,
        "spec": spec,
        "key": spec.key,
        "summary": f"{spec.summary} (needs {source} or task.data_dir)",
        "num_labels": spec.num_classes,
    })
    globals()[name] = register_task(cls)  # a module attribute: picklable by reference
    return cls


for _spec in _TABLE:
    _make(_spec)
del _spec

