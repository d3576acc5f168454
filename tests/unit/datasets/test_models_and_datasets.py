import numpy as np
import pytest
import torch

from tasks.core.batching import ArrayInputs, run_batched
from tasks.datasets import prepare as datasets
from tasks.sources.export import resolve_source
from tasks.sources.pytorch import load_state_dict_model
from tasks.validation.metrics import accuracy, closeness, softmax, top_k

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat


def test_mobilenet_v2_loads_torchvision_weights_and_sees_a_cat():
    model = load_state_dict_model(resolve_source("builtin:mobilenet_v2"), "mobilenet_v2")
    from skimage.data import chelsea

    boxes = datasets.crop_boxes(*chelsea().shape[:2])
    top, left, side, _ = boxes[0]
    image = datasets._resized(chelsea()[top : top + side, left : left + side])
    with torch.inference_mode():
        probs = softmax(model(torch.from_numpy(datasets.preprocess(image[None]))).numpy())[0]
    top5 = np.argsort(-probs)[:5]
    assert top5[0] in CAT_CLASSES
    assert set(top5[:3]) == CAT_CLASSES
    assert datasets.class_names()[281] == "tabby"


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
    calibration = datasets.calibration_inputs(16)
    assert calibration.shape == (16, 224, 224, 3)
    validation_images = {datasets.PHOTOS[i].load().tobytes()[:4096] for i in range(len(datasets.PHOTOS))}
    calibration_images = {load()[..., :3].tobytes()[:4096] for load in datasets.CALIBRATION_PHOTOS}
    assert not validation_images & calibration_images
    with np.load(datasets.local_path(dataset_ref.calibration_uri)) as stored:
        assert stored["input"].shape[1:] == (3, 224, 224) and stored["input"].dtype == np.float32


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
    x = datasets.preprocess(white)
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], (1 - datasets.IMAGENET_MEAN) / datasets.IMAGENET_STD, rtol=1e-6)


def test_accuracy_counts_any_correct_class_in_top_k():
    logits = np.array([[0.0, 3.0, 2.0, 1.0], [5.0, 0.0, 0.0, 1.0]])
    labels = np.array([[2, -1], [1, 3]])
    assert accuracy(logits, labels, 1) == 0.0
    assert accuracy(logits, labels, 2) == 1.0
    assert top_k(logits, 2).tolist() == [[1, 2], [0, 3]]


def test_run_batched_pads_the_last_batch_for_fixed_shape_models():
    seen = []

    def predict(batch):
        seen.append(len(batch["x"]))
        assert len(batch["x"]) == 4
        return batch["x"].sum(axis=1, keepdims=True)

    out = run_batched(predict, ArrayInputs({"x": np.arange(10, dtype=np.float32).reshape(10, 1)}), 4)
    assert seen == [4, 4, 4]
    assert out[:, 0].tolist() == list(range(10))


def test_closeness_metrics_survive_zero_outputs():
    reference = np.array([[0.0, 0.0], [1.0, 2.0]])
    same = closeness(reference.copy(), reference)
    assert same["cosine_min"] == pytest.approx(1.0) and same["max_abs_diff"] == same["max_rel_diff"] == 0.0
    off = closeness(np.array([[1e-3, 0.0], [1.0, 2.0]]), reference)
    assert off["cosine_min"] == 0.0  # a zero reference and a non-zero output do not agree
    assert np.isfinite(off["max_rel_diff"]) and off["max_abs_diff"] == 1e-3


def test_a_value_is_out_of_tolerance_only_when_off_by_more_than_atol_and_more_than_rtol():
    reference = np.array([[0.0, 100.0, 1.0, 1.0]])
    outputs = np.array([[0.005, 104.0, 1.02, 1.5]])  # within atol; within rtol; within atol; outside both
    assert closeness(outputs, reference, atol=0.05, rtol=0.05)["out_of_tolerance"] == 0.25
    assert closeness(outputs, reference, atol=0.0, rtol=0.0)["out_of_tolerance"] == 1.0


@pytest.mark.parametrize("architecture", ["resnet9000"])
def test_unknown_architecture_is_named(architecture):
    from tasks import models

    with pytest.raises(ValueError, match="unknown architecture 'resnet9000'.*mobilenet_v2"):
        models.build(architecture)


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
