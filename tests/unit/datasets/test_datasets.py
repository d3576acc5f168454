"""Validation and calibration samples: built in, .npz, photo directories; checked against the model."""

import numpy as np
import pytest
import torch

from tasks.datasets import builtin, imagenet
from tasks.datasets import calibration as calibration_file
from tasks.datasets import prepare as datasets
from tasks.sources.export import resolve_source
from tasks.sources.pytorch import load_state_dict_model
from tasks.validation.metrics import accuracy

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat


def test_builtin_dataset_is_large_labelled_and_deterministic(tmp_path, exported):
    first = datasets.prepare("builtin:photos", tmp_path / "a", exported)
    second = datasets.prepare("builtin:photos", tmp_path / "b", exported)
    assert first.samples >= 200 and first.labelled and first.inputs == ["input"]
    assert first.sha256 == second.sha256
    loaded = datasets.load(first)
    assert loaded.arrays["input"].shape == (first.samples, 224, 224, 3)
    assert loaded.arrays["input"].dtype == np.uint8  # stored once; preprocessed on read
    assert loaded.inputs(0, 2)["input"].shape == (2, 3, 224, 224)
    valid = loaded.labels[loaded.labels >= 0]
    assert valid.min() >= 0 and valid.max() < 1000
    assert (loaded.labels >= 0).any(axis=1).all()  # every sample has at least one correct class
    # the probe sample is the plain centre crop of the cat photo, labelled with the cat classes
    assert set(loaded.labels[loaded.probe_index][loaded.labels[loaded.probe_index] >= 0]) == CAT_CLASSES
    assert first.probe.startswith("chelsea")


def test_calibration_photos_are_not_validation_photos(dataset_ref):
    calibration = builtin.calibration_inputs(16)
    assert calibration.shape == (16, 224, 224, 3)
    validation_images = {builtin.PHOTOS[i].load().tobytes()[:4096] for i in range(len(builtin.PHOTOS))}
    calibration_images = {load()[..., :3].tobytes()[:4096] for load in builtin.CALIBRATION_PHOTOS}
    assert not validation_images & calibration_images
    # stored as uint8 photos, handed to quantisers as model input
    stored = calibration_file.load(datasets.local_path(dataset_ref.calibration_uri))
    assert stored["input"].shape == (300, 3, 224, 224) and stored["input"].dtype == np.float32
    assert dataset_ref.calibration_samples == 300 and "astronaut" in dataset_ref.calibration_sources[0]


def test_dataset_that_does_not_fit_the_model_is_refused_before_any_compile(tmp_path, exported):
    np.savez(tmp_path / "wrong.npz", input=np.zeros((4, 3, 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match=r"shaped \[3, 32, 32\], the model takes \['batch', 3, 224, 224\]"):
        datasets.prepare(str(tmp_path / "wrong.npz"), tmp_path / "out", exported)
    np.savez(tmp_path / "names.npz", a=np.zeros((4, 3)), b=np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"has arrays \['a', 'b'\] but the model's inputs are \['input'\]"):
        datasets.prepare(str(tmp_path / "names.npz"), tmp_path / "out", exported)


def test_a_user_npz_dataset_with_labels_is_read(tmp_path, exported):
    x = np.random.default_rng(0).standard_normal((5, 3, 224, 224)).astype(np.float32)
    np.savez(tmp_path / "mine.npz", input=x, labels=np.array([1, 2, 3, 4, 5]), calibration__input=x[:2])
    ref = datasets.prepare(str(tmp_path / "mine.npz"), tmp_path / "out", exported)
    assert ref.samples == 5 and ref.labelled and ref.calibration_uri
    np.testing.assert_array_equal(datasets.load(ref).inputs()["input"], x)


def test_preprocess_normalises_with_imagenet_statistics():
    white = np.full((1, 224, 224, 3), 255, dtype=np.uint8)
    x = imagenet.preprocess(white)
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], (1 - imagenet.IMAGENET_MEAN) / imagenet.IMAGENET_STD, rtol=1e-6)


def _photo_dir(tmp_path, rows):
    from skimage import data
    from skimage.io import imsave

    tmp_path.mkdir()
    imsave(tmp_path / "cat.png", data.chelsea())
    imsave(tmp_path / "coffee.jpg", data.coffee())
    imsave(tmp_path / "camera.png", data.camera())  # greyscale: made RGB
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_a_user_photo_directory_with_a_labels_csv_is_prepared_like_the_builtin_photos(tmp_path, exported):
    directory = _photo_dir(tmp_path / "photos", ["file,label", "cat.png,tabby,tiger cat,281", "coffee.jpg,967", ""])
    ref = datasets.prepare(str(directory), tmp_path / "out", exported)
    assert ref.labelled and ref.samples == 2 and ref.calibration_uri
    loaded = datasets.load(ref)
    assert loaded.inputs(0, 2)["input"].shape == (2, 3, 224, 224)
    assert loaded.labels.tolist() == [[281, 282, 281], [967, -1, -1]]
    model = load_state_dict_model(resolve_source("builtin:mobilenet_v2"), "mobilenet_v2")
    with torch.no_grad():
        logits = model(torch.from_numpy(loaded.inputs(0, 2)["input"])).numpy()
    assert accuracy(logits, loaded.labels, 5) == 1.0  # the model sees the cat and the espresso


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["cat.png,1000"], r"labels must be class ids 0\.\.999 \(-1 pads label sets\); found \[1000\]"),
        (["cat.png,fluffy"], r"line 1: label 'fluffy' is neither a class id nor an ImageNet class name"),
        (["dog.png,1"], r"line 1: image .*dog.png does not exist"),
        (["cat.png"], r"line 1: expected file, label"),
    ],
)
def test_a_bad_photo_directory_is_refused_naming_the_problem(tmp_path, exported, rows, message):
    with pytest.raises(ValueError, match=message):
        datasets.prepare(str(_photo_dir(tmp_path / "photos", rows)), tmp_path / "out", exported)


def test_npz_labels_are_checked_against_the_models_class_count(tmp_path, exported):
    np.savez(tmp_path / "d.npz", input=np.zeros((2, 3, 224, 224), np.float32), labels=np.array([3, 1200]))
    with pytest.raises(ValueError, match=r"found \[1200\]"):
        datasets.prepare(str(tmp_path / "d.npz"), tmp_path / "out", exported)
