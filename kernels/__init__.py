"""Triton-fused kernels (surgeon.kernels). Empty until a pass needs one; Triton stays optional."""
