"""Factorize methods: how a weight W is approximated at rank k (surgeon/lowrank.py).

Each method picks row weights L and a right transform R, takes the SVD of
L W R, keeps rank k and undoes the transform, so the dropped sigma^2 are the
method's own truncation loss.
"""

from surgeon.catalogue import Catalogue, Method
from surgeon.methods import papers

METHODS = Catalogue("factorize", "factorize method")

METHODS.add(Method(
    "svd", "truncated SVD of W: the best rank-k W' in Frobenius norm",
    papers.ECKART_YOUNG, "surgeon.lowrank:svd"))
METHODS.add(Method(
    "asvd", "SVD of W diag(mean|x|^alpha): columns scaled by activation magnitude",
    papers.ASVD, "surgeon.lowrank:asvd", needs=("abs_mean",)))
METHODS.add(Method(
    "svd_llm", "SVD of W S, S S^T = chol(X^T X): minimises the layer's output error ||(W-W')X^T||",
    papers.SVD_LLM, "surgeon.lowrank:svd_llm", needs=("gram",)))
METHODS.add(Method(
    "fwsvd", "SVD of diag(sqrt(Fisher_row)) W: rows weighted by their Fisher information",
    papers.FWSVD, "surgeon.lowrank:fwsvd", needs=("fisher_rows",)))
