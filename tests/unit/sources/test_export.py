import numpy as np
import pytest
import torch

from tasks.core.files import local_path, sha256_file
from tasks.core.params import PipelineParams
from tasks.sources.export import ModelLoadError, export_model
from tasks.sources.pytorch import load_state_dict_model


def test_export_writes_onnx_and_weights_with_checksums(exported):
    assert exported.parameters == 3_504_872
    assert exported.inputs[0].shape == ["batch", 3, 224, 224]
    for ref in exported.formats.values():
        path = local_path(ref.uri)
        assert sha256_file(path) == ref.sha256 and path.stat().st_size == ref.size
    import onnxruntime as ort

    session = ort.InferenceSession(str(local_path(exported.formats["onnx"].uri)))
    x = np.random.default_rng(0).standard_normal((3, 3, 224, 224), dtype=np.float32)
    model = load_state_dict_model(local_path(exported.formats["pytorch_state_dict"].uri), "mobilenet_v2")
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, atol=1e-3)


def _params(path) -> PipelineParams:
    return PipelineParams(model_uri=str(path))


def test_missing_model_file_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        export_model(_params(tmp_path / "nope.pt"), tmp_path / "out")


def test_empty_model_file_is_named(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is empty"):
        export_model(_params(tmp_path / "empty.pt"), tmp_path / "out")


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(4, 2).state_dict(), path)
    with pytest.raises(ModelLoadError, match="do not fit architecture 'mobilenet_v2'"):
        export_model(_params(path), tmp_path / "out")


def test_model_returning_nan_is_refused(tmp_path, exported):
    state = torch.load(local_path(exported.formats["pytorch_state_dict"].uri), weights_only=True)
    state["classifier.1.bias"][:] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(ModelLoadError, match="NaN or Inf"):
        export_model(_params(tmp_path / "nan.pt"), tmp_path / "out")
