"""Verify metrics: how close the compiled model stays to the original on held-out
inputs (surgeon/verify.py). `bound` is the comparison a `verify` line must use."""

from surgeon.catalogue import Catalogue, Method
from surgeon.methods import papers

METRICS = Catalogue("verify", "verify metric")

METRICS.add(Method(
    "cosine", "mean cosine between original and compiled output vectors over real tokens",
    None, "surgeon.verify:Cosine", extra={"bound": ">="}))
METRICS.add(Method(
    "cosine_min", "the smallest of those token cosines", None, "surgeon.verify:CosineMin",
    extra={"bound": ">="}))
METRICS.add(Method(
    "embedding_cosine", "mean cosine between mean-pooled outputs (sentence embeddings)",
    papers.SBERT, "surgeon.verify:EmbeddingCosine", extra={"bound": ">="}))
METRICS.add(Method(
    "rel_error", "||Y' - Y||_F / ||Y||_F over real tokens", None, "surgeon.verify:RelError",
    extra={"bound": "<="}))
