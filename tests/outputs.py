"""Outputs of a compiled graph and of an eager transformers model (or a PeftModel
around one) on the same batch, for tests that compare the two."""

from __future__ import annotations

import torch


def run(module, batch) -> torch.Tensor:
    """The compiled graph: positional inputs, one tensor out."""
    with torch.no_grad():
        return module(*batch.inputs)


def hf(model, batch) -> torch.Tensor:
    """An eager text model: last_hidden_state for the batch's ids and mask."""
    with torch.no_grad():
        return model(input_ids=batch.inputs[0], attention_mask=batch.inputs[1]).last_hidden_state


def onnx(path, batch):
    """An exported model in onnxruntime (CPU), fed the batch's inputs in order: its first
    output (last_hidden_state for text models) as numpy."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), batch.inputs, strict=True)}
    return session.run(None, feeds)[0]
