"""The user's data, in ``datasets.load_dataset``'s terms: a hub id, a file (``.csv``, ``.json``,
``.jsonl``, ``.parquet``, also compressed ``.gz`` / ``.bz2``) or a folder of ``train.*`` /
``validation.*`` / ``test.*`` files; ``task.config``, ``task.revision``, ``task.data_files`` (a
path, a glob, or ``train=a.csv,test=b.csv``) and split names or slices (``train[:5000]``,
``train[-10%:]``). No registry file to fill in first.

:func:`load_source` gives every split as plain rows plus what the study records: the files
(absolute paths), the columns and a fingerprint (SHA-256 of the local files; for a hub id, its
revision or the dataset's fingerprint). :func:`pick_splits` chooses train / validation / test:
validation never comes from the test split (see its docstring).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._hub import hub_errors
from ._splits import SPLIT_SEED, check_holdout
from .base import TaskError, TaskOptions

__all__ = ["BUILDERS", "DataOptions", "Source", "check_fingerprint", "load_source",
           "pick_splits"]

#: A file's extension (after a compression suffix) -> the ``datasets`` builder that reads it.
BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_COMPRESSED = (".gz", ".bz2")
_VALIDATION_NAMES = ("validation", "valid", "val", "dev")
_SPLIT_NAMES = ("train", *_VALIDATION_NAMES, "test")
_SLICE = re.compile(r"^([A-Za-z_][\w.-]*)(?:\[\s*(-?\d+%?)?\s*:\s*(-?\d+%?)?\s*\])?$")


@dataclasses.dataclass
class DataOptions(TaskOptions):
    #: A hub id, a file or a folder (``--dataset``); ``--data-dir`` is the same for a folder.
    dataset: str | None = None
    config: str | None = None
    revision: str | None = None
    data_files: str | None = None
    train_split: str = "train"
    validation_split: str | None = None
    test_split: str | None = None
    #: The hold-out of train that becomes validation when the source has no validation split.
    holdout: float = 0.1
    validation_size: int | None = 1000
    #: Recorded by the sweep when it is checked (a rerun on changed data is refused).
    fingerprint: str | None = None
    split_sizes: str | None = None


@dataclasses.dataclass
class Source:
    splits: dict[str, list[dict[str, Any]]]
    columns: list[str]
    label: str  # how errors name the source: a file's name, a folder, a hub id
    dataset: str  # what the study records: an absolute path, or the hub id
    fingerprint: str


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _builder(path: Path) -> str:
    ext = _suffix(path)
    if ext not in BUILDERS:
        raise TaskError(f"unknown extension {ext or '(none)'!r} of {path.name} (csv, json, jsonl, "
                        "parquet, optionally .gz/.bz2)")
    return BUILDERS[ext]


def _expand(pattern: str, root: Path | None) -> list[Path]:
    text = str(Path(pattern).expanduser())
    if root is not None and not Path(text).is_absolute():
        text = str(root / text)
    found = sorted(Path(p).resolve() for p in glob.glob(text)) if glob.has_magic(text) else (
        [Path(text).resolve()] if Path(text).is_file() else [])
    if not found:
        raise TaskError(f"task.data_files: no file matches {pattern!r}")
    return found


def _data_files(options: DataOptions, root: Path | None) -> dict[str, list[Path]]:
    """``task.data_files`` (or the folder / file given as ``task.dataset``) as split -> files."""
    given = options.data_files
    if given:
        parts = [p.strip() for p in str(given).split(",") if p.strip()]
        if all("=" in p for p in parts):
            out: dict[str, list[Path]] = {}
            for part in parts:
                split, _, pattern = part.partition("=")
                out.setdefault(split.strip(), []).extend(_expand(pattern.strip(), root))
            return out
        if any("=" in p for p in parts):
            raise TaskError(f"task.data_files={given!r} mixes split=file and plain files: write "
                            "train=a.csv,test=b.csv or a.csv,b.csv")
        return {"train": [f for p in parts for f in _expand(p, root)]}
    assert root is not None
    if root.is_file():
        return {"train": [root.resolve()]}
    out = {}
    for child in sorted(root.iterdir()):
        stem = child.name.split(".")[0].lower()
        if child.is_file() and stem in _SPLIT_NAMES and _suffix(child) in BUILDERS:
            out.setdefault(stem, []).append(child.resolve())
    if not out:
        names = ", ".join(sorted(c.name for c in root.iterdir())[:8]) or "nothing"
        raise TaskError(f"folder {root} holds no train.* / validation.* / test.* file (csv, json, "
                        f"jsonl, parquet; it holds {names}): name the files so, or pass "
                        "task.data_files=train=a.csv,test=b.csv")
    return out


def _sha256(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def _malformed(path: Path, err: Exception) -> str:
    """``file:line: reason`` for a file that does not parse (the line found where we can)."""
    reason = (str(err).splitlines() or [type(err).__name__])[-1].strip()
    if _builder(path) == "json":
        import fsspec

        with fsspec.open(str(path), "rt", compression="infer", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        json.loads(line)
                    except json.JSONDecodeError as bad:
                        return f"{path}:{number}: not JSON ({bad.msg})"
    line = re.search(r"line (\d+)", reason)
    where = f"{path}:{line.group(1)}" if line else str(path)
    return f"{where}: cannot be read as {_builder(path)} ({reason})"


def _load_files(files: dict[str, list[Path]]) -> dict[str, Any]:
    import datasets

    datasets.disable_progress_bars()
    kinds = {_builder(p) for paths in files.values() for p in paths}
    if len(kinds) > 1:
        raise TaskError(f"the data files mix formats ({', '.join(sorted(kinds))}): use one")
    (builder,) = kinds
    out = {}
    logger = logging.getLogger("datasets")  # it logs a parse error before raising it: ours is
    level = logger.level                    # the one line
    logger.setLevel(logging.CRITICAL + 1)
    try:
        for split, paths in files.items():  # one split at a time: an error names its file
            try:
                out[split] = datasets.load_dataset(builder, data_files=[str(p) for p in paths],
                                                   split="train")
            except Exception as err:  # pandas / pyarrow / json parse errors: file and line
                raise TaskError(_malformed(paths[0], err)) from None
    finally:
        logger.setLevel(level)
    return out


def _load_hub(options: DataOptions, task: str) -> tuple[dict[str, Any], str]:
    from .generation import hub_usable

    hint = "without network, pass a local file or folder: --dataset reviews.csv"
    if not hub_usable(str(options.dataset)):  # one quick probe, not the loader's retries
        raise TaskError(f"{task}: cannot load {options.dataset!r} from the Hugging Face Hub "
                        f"(unreachable or unknown, and not in the local cache); {hint}")
    with hub_errors(task, repr(options.dataset), hint):
        import datasets

        datasets.disable_progress_bars()
        loaded = datasets.load_dataset(options.dataset, options.config, revision=options.revision)
    splits = dict(loaded)
    stamp = options.revision or "+".join(splits[s]._fingerprint for s in sorted(splits))
    return splits, f"{options.dataset}@{stamp}"


def _load_saved(root: Path) -> tuple[dict[str, Any], str]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(root))
    except Exception as err:  # a half-written or foreign folder
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise TaskError(f"{root}: cannot be read by datasets.load_from_disk ({reason})") from None
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    return splits, "datasets:" + "+".join(splits[s]._fingerprint for s in sorted(splits))


_PACKAGE_FILE = re.compile(r"^([A-Za-z_][\w.]*):(?![\\/])(.+)$")


def _package_file(given: str) -> Path | None:
    """``package:path/in/it`` -> the file inside that installed package (found without importing
    it, as the embedded data is), or None when ``given`` is not of that form."""
    import importlib.util

    match = _PACKAGE_FILE.match(given)
    if match is None or Path(given).exists():
        return None
    package, inner = match.groups()
    try:
        spec = importlib.util.find_spec(package.split(".")[0])
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise TaskError(f"--dataset {given!r}: no installed package {package!r} (pip install it, "
                        "or give a path)")
    path = Path(next(iter(spec.submodule_search_locations)), *package.split(".")[1:], inner)
    if not path.exists():
        raise TaskError(f"--dataset {given!r}: package {package} has no {inner}")
    return path


def check_fingerprint(source: Source, options: DataOptions) -> None:
    """Refuse data that changed since the sweep recorded its fingerprint (``options``' own)."""
    if options.fingerprint and source.fingerprint != options.fingerprint:
        raise TaskError(f"the data of {source.label} changed since the sweep was checked "
                        f"({source.fingerprint}, recorded {options.fingerprint}): "
                        "restore it, or pass --sweep NAME for a new sweep")

def load_source(options: DataOptions, task: str) -> Source:
    """Every split of the source that ``options`` names, as rows (see the module docstring);
    ``package:path`` names a file shipped inside an installed Python package."""
    given = options.dataset or options.data_dir
    if given:
        given = str(_package_file(str(given)) or given)
    if not given and not options.data_files:
        raise TaskError(f"{task} needs data: --dataset FILE_OR_FOLDER_OR_HUB_ID (csv, json, jsonl, "
                        "parquet; or a folder of train.* / validation.* / test.*)")
    root = Path(str(given)).expanduser() if given else None
    if root is not None and not root.exists() and not options.data_files:
        if root.suffix or str(given).startswith((".", "/", "~")):  # a path, not a hub id
            if _suffix(root) not in BUILDERS:
                _builder(root)
            raise TaskError(f"no file or folder {given!r}: check --dataset")
        splits, fingerprint = _load_hub(options, task)
        label, dataset = str(given), str(given)
    elif root is not None and root.is_dir() and not options.data_files and (
            (root / "dataset_dict.json").is_file() or (root / "state.json").is_file()):
        splits, fingerprint = _load_saved(root)  # written by datasets' save_to_disk
        label, dataset = root.name, str(root.resolve())
    else:
        files = _data_files(options, root)
        splits = _load_files(files)
        every = [p for paths in files.values() for p in paths]
        fingerprint = _sha256(every)
        label = (root.name if root is not None else every[0].name)
        dataset = str(root.resolve()) if root is not None else ""
    rows = {name: split.to_list() for name, split in splits.items()}
    columns = list(next(iter(splits.values())).column_names) if splits else []
    return Source(rows, columns, label, dataset, fingerprint)


def _slice(spec: str, splits: dict[str, list], label: str, option: str) -> tuple[str, range]:
    """``name`` or ``name[a:b]`` (ints or percents) -> (split name, the index range)."""
    match = _SLICE.match(str(spec).strip())
    if not match:
        raise TaskError(f"{option}={spec!r} is not a split or slice (e.g. train, train[:5000], "
                        "train[-10%:])")
    name, start, stop = match.groups()
    if name not in splits:
        raise TaskError(f"no split {name!r} in {label} (splits: {', '.join(splits)}); "
                        f"fix {option}")
    n = len(splits[name])

    def bound(text: str | None, default: int) -> int:
        if text is None:
            return default
        value = round(int(text[:-1]) * n / 100) if text.endswith("%") else int(text)
        return max(0, min(n, value + n if value < 0 else value))

    return name, range(bound(start, 0), bound(stop, n))


def _overlap(a: tuple[str, range], b: tuple[str, range]) -> bool:
    return a[0] == b[0] and max(a[1].start, b[1].start) < min(a[1].stop, b[1].stop)


def pick_splits(source: Source, options: DataOptions, stratum: Callable[[dict], Any],
                text: Callable[[dict], str]) -> tuple[list[dict], list[dict], list[dict], str]:
    """``(train, validation, test, how validation was chosen)``. Validation is
    ``task.validation_split``; else a split named validation / valid / val / dev; else a seeded
    hold-out of train (``task.holdout``, at most ``task.validation_size`` rows), stratified by
    ``stratum``, with rows of train whose ``text`` is also a validation or test row's dropped.
    It is never the test split; a source with no test split is scored on validation (test is
    validation, as GLUE's default is). Overlapping slices are an error."""
    splits, label = source.splits, source.label
    check_holdout(options.holdout)
    train = _slice(options.train_split, splits, label, "task.train_split")
    chosen = [("task.train_split", train)]
    validation = None
    if options.validation_split:
        validation = _slice(options.validation_split, splits, label, "task.validation_split")
        how = f"split {options.validation_split}"
    else:
        name = next((n for n in _VALIDATION_NAMES if n in splits and n != train[0]), None)
        if name is not None:
            validation, how = (name, range(len(splits[name]))), f"split {name}"
    if validation is not None:
        chosen.append(("task.validation_split", validation))
    test = None
    if options.test_split:
        test = _slice(options.test_split, splits, label, "task.test_split")
    elif "test" in splits and train[0] != "test":
        test = ("test", range(len(splits["test"])))
    if test is not None:
        chosen.append(("task.test_split", test))
    for i, (name_a, a) in enumerate(chosen):
        for name_b, b in chosen[i + 1:]:
            if _overlap(a, b):
                raise TaskError(f"{name_a} and {name_b} overlap (split {a[0]} rows "
                                f"{max(a[1].start, b[1].start)}..): give them disjoint slices")
    rows = lambda picked: [splits[picked[0]][i] for i in picked[1]]  # noqa: E731
    train_rows = rows(train)
    test_rows = rows(test) if test is not None else None
    if validation is not None:
        validation_rows = rows(validation)
    else:
        if options.holdout <= 0:
            raise TaskError(f"{label} has no validation split and task.holdout=0: set "
                            "task.holdout=0.1 or task.validation_split (never the test split)")
        train_rows, validation_rows = _stratified(train_rows, options, stratum)
        how = f"hold-out of {options.holdout:g} of train (seed {SPLIT_SEED})"
    if not validation_rows:
        raise TaskError(f"the validation split of {label} is empty ({how}): raise task.holdout "
                        "or give task.validation_split")
    seen = {text(r) for r in validation_rows} | {text(r) for r in test_rows or []}
    train_rows = [r for r in train_rows if text(r) not in seen]
    if not train_rows:
        raise TaskError(f"the train split of {label} is empty: check task.train_split")
    if test_rows is None:
        test_rows, how = validation_rows, how + "; no test split: reported on validation"
    return train_rows, validation_rows, test_rows, how


def _stratified(rows: list[dict], options: DataOptions,
                stratum: Callable[[dict], Any]) -> tuple[list[dict], list[dict]]:
    """A seeded hold-out of ``rows``, the same share of each stratum; both keep rows' order."""
    cap = options.validation_size
    total = min(len(rows) - 1, max(1, round(options.holdout * len(rows))))
    total = total if cap is None else min(cap, total)
    groups: dict[Any, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(stratum(row), []).append(i)
    rng = random.Random(SPLIT_SEED)
    held: set[int] = set()
    for key in sorted(groups, key=str):
        members = groups[key][:]
        rng.shuffle(members)
        held.update(members[:round(total * len(members) / len(rows))])
    return ([r for i, r in enumerate(rows) if i not in held],
            [r for i, r in enumerate(rows) if i in held])
