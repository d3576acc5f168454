"""What every serving runtime declares: where a version's files go (its layout), the config that pins a version,
the container that runs it, and the tensor dtypes it can serve."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tasks.core.schema import TensorSpec


@dataclass(frozen=True)
class ServingLayout:
    """Where a compiled artifact's files go in a serving runtime's model repository."""

    runtime: str  # a runtime's name (tasks.serving.runtimes.RUNTIMES)
    files: dict[str, str]  # artifact file -> path inside the version directory
    graph_file: str  # path inside the version directory, copied last
    pointer_file: str  # beside the version directories
    platform: str = ""  # Triton platform or backend; the others have one platform each


@dataclass(frozen=True)
class Container:
    """The runtime's image (and its Neuron build, where one exists), ports, and arguments from
    (pointer URI, repository URI, model name)."""

    image: str
    neuron_image: str
    ports: dict[str, int]
    args: Callable[[str, str, str], list[str]]


@dataclass(frozen=True)
class PointerRequest:
    """What a runtime's config is written from: the model, where its versions are, the one to pin, its tensors,
    how it batches, and the settings the selected benchmark point ran with."""

    layout: ServingLayout
    model: str
    base_uri: str
    version: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch_size: int
    precision: str = "fp32"
    runtime_settings: dict[str, str] = field(default_factory=dict)
    batch_size: int | None = None  # a fixed-batch artifact's (max_batch_size 0)


@dataclass(frozen=True)
class ServingRuntime:
    name: str
    container: Container
    dtypes: dict[str, str]  # numpy dtype -> the runtime's own type name; any other is refused
    pointer_text: Callable[[PointerRequest], str]

    def type_of(self, spec: TensorSpec) -> str:
        """The runtime's type for a tensor; a dtype it has none for is refused, naming the tensor."""
        if spec.dtype not in self.dtypes:
            raise ValueError(
                f"tensor {spec.name!r} has dtype {spec.dtype!r}, which {self.name} has no type for "
                f"(known: {', '.join(self.dtypes)})"
            )
        return self.dtypes[spec.dtype]

    def check_dtypes(self, request: PointerRequest) -> None:
        for spec in (*request.inputs, *request.outputs):
            self.type_of(spec)
