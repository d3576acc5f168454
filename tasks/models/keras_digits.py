"""A Keras image classifier trained inside the pipeline on scikit-learn's handwritten digits.

It stands for the TensorFlow/Keras path of the Neuron tutorials: a model trained in
Keras and exported as a SavedModel with a serving signature. Training is seeded and
runs with TensorFlow's op determinism, so the same code gives the same weights (and
the compile cache recognises the model on the next run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): keras, sklearn, tensorflow.

IMAGE_SHAPE = (8, 8, 1)
CLASSES = 10
TRAIN_SAMPLES = 1400  # the rest of the 1797 digits are the validation set (tasks.datasets.builtin, builtin:digits)
EPOCHS = 12


def digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as float32 NHWC images in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images.astype(np.float32) / 16.0)[..., None]
    return images, data.target.astype(np.int64)


def train_and_save(out_dir: str | Path) -> tuple[Path, float]:
    """Train, export a SavedModel (signature ``serving_default``) to ``out_dir``; (path, held-out accuracy)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    images, labels = digits()
    model = keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE, name="image"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(CLASSES, name="logits"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(images[:TRAIN_SAMPLES], labels[:TRAIN_SAMPLES], epochs=EPOCHS, batch_size=64, shuffle=True, verbose=0)
    _, accuracy = model.evaluate(images[TRAIN_SAMPLES:], labels[TRAIN_SAMPLES:], verbose=0)
    out_dir = Path(out_dir)
    model.export(str(out_dir), format="tf_saved_model", verbose=False)
    return out_dir, float(accuracy)
