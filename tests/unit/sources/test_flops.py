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
