import numpy as np
import pytest
import torch

from tasks import dataset as datasets
from tasks.export import load_pytorch, resolve_source
from tasks.validate import accuracy, run_batched, softmax, top_k

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat


def test_mobilenet_v2_loads_torchvision_weights_and_sees_a_cat():
    model = load_pytorch(resolve_source("builtin:mobilenet_v2"), "mobilenet_v2")
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


def test_builtin_dataset_is_large_labelled_and_deterministic(tmp_path):
    first = datasets.build_builtin(tmp_path / "a")
    second = datasets.build_builtin(tmp_path / "b")
    assert first.samples >= 200
    assert first.sha256 == second.sha256
    loaded = datasets.load(first)
    assert loaded.images.shape == (first.samples, 224, 224, 3)
    assert loaded.images.dtype == np.uint8
    valid = loaded.labels[loaded.labels >= 0]
    assert valid.min() >= 0 and valid.max() < 1000
    assert (loaded.labels >= 0).any(axis=1).all()  # every sample has at least one correct class
    # the probe sample is the plain centre crop of the cat photo
    assert loaded.photo_names[loaded.photo_ids[loaded.probe_index["chelsea"]]] == "chelsea"


def test_calibration_photos_are_not_validation_photos():
    calibration = datasets.calibration_inputs(16)
    assert calibration.shape == (16, 3, 224, 224)
    validation_images = {datasets.PHOTOS[i].load().tobytes()[:4096] for i in range(len(datasets.PHOTOS))}
    calibration_images = {load()[..., :3].tobytes()[:4096] for load in datasets.CALIBRATION_PHOTOS}
    assert not validation_images & calibration_images


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
        seen.append(len(batch))
        assert len(batch) == 4
        return batch.sum(axis=1, keepdims=True)

    out = run_batched(predict, np.arange(10, dtype=np.float32).reshape(10, 1), 4)
    assert seen == [4, 4, 4]
    assert out[:, 0].tolist() == list(range(10))


@pytest.mark.parametrize("architecture", ["resnet9000"])
def test_unknown_architecture_is_named(architecture):
    from tasks import models

    with pytest.raises(ValueError, match="unknown architecture 'resnet9000'.*mobilenet_v2"):
        models.build(architecture)
