"""Verify metrics: how close the compiled model stays to the original on held-out
inputs (surgeon/verify.py). `bound` is the comparison a `verify` line must use;
`output: logits` marks the language-model metrics, measured only on causal LMs
(next-token logits over held-out text)."""

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

_LM = {"output": "logits"}
METRICS.add(Method(
    "perplexity", "exp of the compiled model's mean next-token NLL on held-out text",
    None, "surgeon.verify:Perplexity", extra={"bound": "<=", **_LM}))
METRICS.add(Method(
    "perplexity_increase", "compiled perplexity / original perplexity - 1 (5% is 0.05)",
    None, "surgeon.verify:PerplexityIncrease", extra={"bound": "<=", **_LM}))
METRICS.add(Method(
    "kl", "mean per-token KL(original || compiled) of the next-token distributions",
    papers.ACCURACY_NOT_ALL, "surgeon.verify:KL", extra={"bound": "<=", **_LM}))
METRICS.add(Method(
    "top1", "share of tokens whose most likely next token is the same in both models",
    papers.ACCURACY_NOT_ALL, "surgeon.verify:Top1", extra={"bound": ">=", **_LM}))
