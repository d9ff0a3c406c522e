"""One check for every kernel op: torch.export sees the op as one node, the ONNX exporter
lowers it through its custom_translation_table entry, and onnxruntime runs the result
like torch on inputs of another batch and length than the traced ones."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch


def assert_onnx_runs_like_torch(net: torch.nn.Module, op, lowering, width: int,
                                tol: float = 1e-5) -> set[str]:
    """Returns the ONNX operator types the graph holds."""
    net = net.eval()
    ep = torch.export.export(net, (torch.randn(2, 5, width),), dynamic_shapes=(
        {0: torch.export.Dim("b"), 1: torch.export.Dim("s")},))
    assert [n.target for n in ep.graph.nodes].count(op) == 1
    program = torch.onnx.export(ep, dynamo=True, custom_translation_table={op: lowering})
    session = ort.InferenceSession(program.model_proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    y = torch.randn(3, 7, width)
    got = session.run(None, {session.get_inputs()[0].name: y.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, net(y).numpy(), atol=tol, rtol=tol)
    return {n.op_type for n in program.model_proto.graph.node}
