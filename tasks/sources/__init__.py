"""Source formats the export task reads: one module each, found by framework name in :data:`SOURCE_MODULES`.

A source module has ``export(params, out_dir) -> ExportedModel``, which writes the formats targets compile
from, and ``load_reference(exported) -> Predict``, which runs the source framework itself on CPU: the
baseline every compiled config is judged against. Modules are imported only when used.
"""

SOURCE_MODULES = {
    "pytorch": "tasks.sources.pytorch",
    "torchscript": "tasks.sources.torchscript",
    "onnx": "tasks.sources.onnx_file",
    "tensorflow": "tasks.sources.tensorflow",
    "huggingface": "tasks.sources.huggingface",
}


def names() -> list[str]:
    return list(SOURCE_MODULES)
