"""Residual-stream rotations: the orthogonal Q that `rotate residual` applies
(passes/rotate_residual.py). A rotation returns Q (d x d, float64) for the stream width."""

from surgeon.catalogue import Catalogue, Method
from surgeon.methods import papers

ROTATIONS = Catalogue("rotate", "rotation")

ROTATIONS.add(Method(
    "hadamard", "the normalised Hadamard matrix H_K (x) H_2^m (sizes K * 2^m, K in 1, 12, 20, "
    "28, 36, 40, 44, 52, 60, 108, 140)", papers.QUAROT,
    "surgeon.passes.rotate_residual:hadamard_rotation"))
ROTATIONS.add(Method(
    "orthogonal", "a random orthogonal matrix (Haar: QR of a Gaussian, signs fixed) drawn "
    "from the seed", papers.SPINQUANT, "surgeon.passes.rotate_residual:random_rotation"))
