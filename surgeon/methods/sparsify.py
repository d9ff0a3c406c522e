"""Activation-sparsity criteria: what `sparsify` ranks to zero a linear's input
(passes/sparsify.py). Each entry's function maps the reading weight (out, in) to the
per-input-channel factor of the score |x_i| * factor_i, or None for plain |x_i|; `extra`
says where the mask goes and what else the method adds:

- shared:  linears reading the same tensor share one mask (q/k/v; gate/up);
- at:      "input" (the linear's input) or "activation" (the activation output inside a
           gated MLP, before the product with up: CATS);
- lowrank: the zeroed part still reaches the output through a rank-r copy of W (R-Sparse);
- rotate:  a per-layer PCA rotation of the residual stream first, then top-k per token
           (LaRoSA; needs `fold norms`).
"""

from surgeon.catalogue import Catalogue, Method
from surgeon.methods import papers

CRITERIA = Catalogue("sparsify", "sparsity criterion")

CRITERIA.add(Method(
    "teal", "zero |x| below a calibrated quantile; one threshold per input tensor",
    papers.TEAL, "surgeon.sparsity:magnitude", needs=("input_rows",),
    extra={"shared": True, "at": "input", "lowrank": False, "rotate": False}))
CRITERIA.add(Method(
    "wina", "zero |x_i| * ||W_:,i||_2 below a calibrated quantile, per linear (the "
    "reading weight's column norms weigh each input)", papers.WINA,
    "surgeon.sparsity:column_norms", needs=("input_rows",),
    extra={"shared": False, "at": "input", "lowrank": False, "rotate": False}))
CRITERIA.add(Method(
    "cats", "zero |act(gate x)| below a calibrated quantile, before the product with up "
    "(a gated MLP's down_proj input)", papers.CATS, "surgeon.sparsity:magnitude",
    needs=("input_rows",), extra={"shared": True, "at": "activation", "lowrank": False,
                                  "rotate": False}))
CRITERIA.add(Method(
    "rsparse", "TEAL's mask on W, and the zeroed entries through a rank-r SVD of W: "
    "y = W (x m) + U_r S_r V_r^T (x (1 - m))", papers.RSPARSE, "surgeon.sparsity:magnitude",
    needs=("input_rows",), extra={"shared": True, "at": "input", "lowrank": True,
                                  "rotate": False}))
CRITERIA.add(Method(
    "larosa", "rotate the residual stream into each segment's principal directions (PCA "
    "of the normalised stream, folded into the weights, exact), then keep each token's "
    "top-k |x|; after `fold norms`", papers.LAROSA, "surgeon.sparsity:magnitude",
    needs=("input_rows", "gram"), extra={"shared": True, "at": "input", "lowrank": False,
                                         "rotate": True}))
