"""Adapter kinds (what sits beside a frozen linear) and inits (how it starts);
surgeon/adapters.py holds both."""

from surgeon.catalogue import Catalogue, Method
from surgeon.methods import papers

KINDS = Catalogue("adapter", "adapter method")
INITS = Catalogue("adapter_init", "adapter init")

KINDS.add(Method(
    "lora", "y = W x + b + (alpha/r) B A x, base frozen", papers.LORA,
    "surgeon.adapters:LoraAdapter"))
KINDS.add(Method(
    "dora", "y = m * (W + (alpha/r) B A) x / ||W + (alpha/r) B A||_row + b: magnitude and "
    "direction", papers.DORA, "surgeon.adapters:DoraAdapter"))

INITS.add(Method(
    "zero", "A kaiming-uniform, B = 0: inserting the adapter changes nothing", papers.LORA,
    "surgeon.adapters:init_zero"))
INITS.add(Method(
    "gaussian", "A ~ N(0, 1/r), B = 0", papers.LORA, "surgeon.adapters:init_gaussian"))
INITS.add(Method(
    "pissa", "A, B from the principal r singular triplets of W; the residual base is frozen",
    papers.PISSA, "surgeon.adapters:init_pissa"))
INITS.add(Method(
    "eva", "A = top-r principal components of the layer's calibration inputs, B = 0",
    papers.EVA, "surgeon.adapters:init_eva", needs=("gram", "mean")))
