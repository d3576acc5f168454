"""ImageNet preprocessing: uint8 NHWC RGB photos made model input (the stored form of every photo set)."""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
PREPROCESS = "imagenet_nchw"  # how datasets name this preprocessing


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC RGB -> float32 NCHW normalised with ImageNet mean and std."""
    x = images.astype(np.float32) / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
