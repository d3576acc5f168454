"""Where a promoted version's files go for the serving runtime that reads them, and what points that runtime at
a version. Each runtime's own facts (layout, config, container, dtypes) live in its module under
``tasks/serving/runtimes/``; this module picks the runtime from the target.

Neuron binaries (NEFF) travel alongside in ``<N>/neff/``. Each layout names its graph file, the one a
runtime watches for: it is copied last, so a runtime never sees a version whose weights are missing.
A pointer only ever names committed versions, so it is the switch that moves serving.
"""

from __future__ import annotations

from tasks import targets
from tasks.core.schema import TensorSpec
from tasks.serving import runtimes
from tasks.serving.runtimes import PointerRequest, ServingLayout


def layout_for(target: str, files: list[str]) -> ServingLayout:
    """The serving layout of a compiled artifact, from its target and files."""
    layout = targets.get(target).serving_layout(files) if target in targets.names() else None
    if layout is None:
        raise ValueError(f"no serving layout for a {target} artifact with files {sorted(files)}")
    return layout


def upload_order(layout: ServingLayout) -> list[str]:
    """Artifact files in copy order: the graph file last."""
    return sorted(layout.files, key=lambda f: (layout.files[f] == layout.graph_file, f))


def pointer_text(
    layout: ServingLayout,
    model: str,
    base_uri: str,
    version: int,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    max_batch_size: int,
    precision: str = "fp32",
    runtime_settings: dict[str, str] | None = None,
    batch_size: int | None = None,
) -> str:
    """The runtime's config pinning ``version`` (a committed one) under ``base_uri`` (the model's S3 prefix), built
    by the runtime's module (with its own schema where it has one). ``batch_size``: a fixed-batch artifact's
    (``max_batch_size`` 0). ``runtime_settings`` are those the benchmark's selected point ran with; where the
    runtime takes them, serving runs what was measured. A tensor dtype the runtime cannot serve is refused by name.
    """
    request = PointerRequest(
        layout, model, base_uri, version, inputs, outputs, max_batch_size, precision, runtime_settings or {}, batch_size
    )
    return runtimes.get(layout.runtime).pointer_text(request)
