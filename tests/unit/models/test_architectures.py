"""Architectures rebuilt from weights-only state dicts."""

import numpy as np
import pytest
import torch

from tasks.datasets import builtin, imagenet
from tasks.sources.export import resolve_source
from tasks.sources.pytorch import load_state_dict_model
from tasks.validation.metrics import softmax

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat


def test_mobilenet_v2_loads_torchvision_weights_and_sees_a_cat():
    model = load_state_dict_model(resolve_source("builtin:mobilenet_v2"), "mobilenet_v2")
    from skimage.data import chelsea

    boxes = builtin.crop_boxes(*chelsea().shape[:2])
    top, left, side, _ = boxes[0]
    image = builtin._resized(chelsea()[top : top + side, left : left + side])
    with torch.inference_mode():
        probs = softmax(model(torch.from_numpy(imagenet.preprocess(image[None]))).numpy())[0]
    top5 = np.argsort(-probs)[:5]
    assert top5[0] in CAT_CLASSES
    assert set(top5[:3]) == CAT_CLASSES
    assert builtin.class_names()[281] == "tabby"


@pytest.mark.parametrize("architecture", ["resnet9000"])
def test_unknown_architecture_is_named(architecture):
    from tasks import models

    with pytest.raises(ValueError, match="unknown architecture 'resnet9000'.*mobilenet_v2"):
        models.build(architecture)
