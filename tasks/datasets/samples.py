"""A dataset before it is bound to a model: the :class:`Samples` every source (built in or a user's) makes, and
the int8 calibration default they share."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CALIBRATION_SAMPLES = 300  # int8 calibration inputs by default (NNCF's default subset size)


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
