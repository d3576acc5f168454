"""FLOPs per sample, counted on the exported ONNX graph."""


def test_flops_are_counted_on_the_onnx_graph_like_torchs_flop_counter(tmp_path):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tasks.sources.flops import count_onnx

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.Conv2d(8, 8, 3, groups=8),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 14 * 14, 10),
    ).eval()
    example = torch.zeros(1, 3, 16, 16)
    torch.onnx.export(model, (example,), str(tmp_path / "m.onnx"), input_names=["x"], dynamo=False,
                      dynamic_axes={"x": {0: "batch"}})  # fmt: skip
    with FlopCounterMode(display=False) as counter:
        model(example)
    assert count_onnx(tmp_path / "m.onnx") == counter.get_total_flops()


def test_a_transformers_matmuls_are_counted_against_a_hand_count(tmp_path):
    """The built-in BERT-style encoder, exported as every PyTorch source is (dynamic batch axis): its MatMuls sit
    behind the shape arithmetic of the dynamic axis, which the count must see through."""
    from tasks.core.files import local_path
    from tasks.core.params import PipelineParams
    from tasks.models import text_encoder as te
    from tasks.sources.export import export_model

    exported = export_model(PipelineParams(model_uri="builtin:text_encoder"), tmp_path / "export")
    s, h = te.SEQUENCE_LENGTH, te.HIDDEN
    per_layer = s * (3 * h * h + h * h + 2 * h * 4 * h) + 2 * s * s * h  # QKV, projection, FFN; scores and values
    hand = 2 * te.LAYERS * per_layer
    assert hand <= exported.flops_per_sample <= 1.1 * hand  # the pooling and the head add a little
    from tasks.sources.flops import count_onnx

    assert count_onnx(local_path(exported.formats["onnx"].uri)) == exported.flops_per_sample


def test_resnet50_flops_match_torchs_own_counter(tmp_path):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tasks.models import build
    from tasks.sources.flops import count_onnx

    model = build("resnet50").eval()
    example = torch.zeros(1, 3, 224, 224)
    torch.onnx.export(model, (example,), str(tmp_path / "r.onnx"), input_names=["x"], dynamo=False,
                      dynamic_axes={"x": {0: "batch"}})  # fmt: skip
    with FlopCounterMode(display=False) as counter:
        model(example)
    assert count_onnx(tmp_path / "r.onnx") == counter.get_total_flops()  # about 8.2 GFLOPs, as published (4.1 GMACs)
