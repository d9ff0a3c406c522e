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
    """An exported text model in onnxruntime (CPU): last_hidden_state as numpy."""
    import onnxruntime as ort

    feeds = {"input_ids": batch.inputs[0].numpy(), "attention_mask": batch.inputs[1].numpy()}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]
