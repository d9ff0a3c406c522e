"""Graph passes (surgeon.passes), one file per IR step kind.

Importing this package registers every pass; each import below is one pass.
"""

from surgeon.passes import adapter, adapter_load, factorize, fold, prune_layers  # noqa: F401
