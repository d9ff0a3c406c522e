"""Residual-stream rotations: the orthogonal Q that `rotate residual` applies
(passes/rotate_residual.py). A rotation is called with (stream width d, seed, the summed
Gram of the normalised stream or None) and returns Q (d x d, float64); one that needs
the Gram says so (needs=("gram",))."""

from surgeon.catalogue import Catalogue, Method
from surgeon.methods import papers

ROTATIONS = Catalogue("rotate", "rotation")

ROTATIONS.add(Method(
    "hadamard", "the normalised Hadamard matrix H_K (x) H_2^m (sizes K * 2^m, K in 1, 12, 20, "
    "28, 36, 40, 44, 52, 60, 108, 140, 156, 172)", papers.QUAROT,
    "surgeon.passes.rotate_residual:hadamard_rotation"))
ROTATIONS.add(Method(
    "orthogonal", "a random orthogonal matrix (Haar: QR of a Gaussian, signs fixed) drawn "
    "from the seed", papers.SPINQUANT, "surgeon.passes.rotate_residual:random_rotation"))
ROTATIONS.add(Method(
    "pca", "the principal directions of the normalised stream (eigenvectors of the summed "
    "input Gram of one reader per norm), by falling variance", papers.SLICEGPT,
    "surgeon.passes.rotate_residual:pca_rotation", needs=("gram",)))
