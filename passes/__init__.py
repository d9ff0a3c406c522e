"""Graph passes (surgeon.passes), one file per IR step kind.

Importing this package registers every pass; each import below is one pass.
"""

from surgeon.passes import (  # noqa: F401
    adapter,
    adapter_load,
    factorize,
    fold,
    fold_norms,
    kernels,
    prune_layers,
    rotate_heads,
    rotate_inputs,
    rotate_residual,
    slice_residual,
    sparsify,
)
