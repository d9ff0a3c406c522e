"""Hadamard matrices of order n = K * 2^m, and the fast Walsh-Hadamard transform.

H_n = H_K (x) H_{2^m}: H_{2^m} is Sylvester's (H_1 = [1], H_2m = [[H, H], [H, -H]]), H_K
one of Paley's constructions (R. E. A. C. Paley, "On orthogonal matrices", J. Math.
Phys. 12, 1933), built here from its definition rather than copied as a table:

- Paley I, q a prime = 3 (mod 4): H = I + [[0, 1^T], [-1, Q]], order q + 1;
- Paley II, q a prime power = 1 (mod 4): C = [[0, 1^T], [1, Q]],
  H = C (x) [[1, -1], [-1, -1]] + I (x) [[1, 1], [1, -1]], order 2(q + 1);

with Q the Jacobsthal matrix Q_ij = chi(a_j - a_i) of GF(q) (chi: +1 on nonzero squares,
-1 on non-squares, 0 at 0). 156 = 4 * 39 and 172 = 4 * 43 have no Paley construction:
they are Williamson's (J. Williamson, "Hadamard's determinant theorem and the sum of four
squares", Duke Math. J. 11, 1944), four symmetric circulant +-1 matrices A, B, C, D with
A^2 + B^2 + C^2 + D^2 = 4n I, of which only the first rows are data here (read off the
order-156/172 matrices of QuaRot's hadamard_utils.py, which are of this form; the
identity is checked in tests/test_hadamard.py).

Every matrix here is the one surgeon uses everywhere: the offline weight transform and
the online op (kernels/hadamard.py) both come from `hadamard_matrix`, so they cannot
disagree. Sizes with no construction here are refused
with the nearest supported ones; nothing is ever zero-padded (a padded transform is not
orthogonal).
"""

from __future__ import annotations

import math
from functools import cache

import torch

# K -> (construction, q): the orders of the literature's H_K (QuaRot's list) that Paley's
# constructions reach; 1 is Sylvester alone.
_PALEY = {12: ("I", 11), 20: ("I", 19), 28: ("II", 13), 36: ("II", 17), 40: ("double", 20),
          44: ("I", 43), 52: ("II", 25), 60: ("I", 59), 108: ("I", 107), 140: ("I", 139)}
# K -> first rows of Williamson's A, B, C, D (+ is 1, - is -1), each symmetric: a_j = a_{n-j}
_WILLIAMSON = {
    156: ("+++--+-+-----+--++----++--+-----+-+--++", "++++---+--++----+-+--+-+----++--+---+++",
          "+++--++-+---+-+--+----+--+-+---+-++--++", "+---++-+-+-----+++-++-+++-----+-+-++---"),
    172: ("+---++--++++-+-+++-++--++-+++-+-++++--++---",
          "++-++++++----+-+--++-++-++--+-+----++++++-+",
          "+++-+-++--+-+-++++-+----+-++++-+-+--++-+-++",
          "++---++++-+--+--++--------++--+--+-++++---+"),
}
SUPPORTED_K = (1, *sorted((*_PALEY, *_WILLIAMSON)))


def _field(q: int) -> tuple[list[tuple[int, int]], dict[tuple[int, int], int]]:
    """GF(q) for q = p or p^2 (elements a + b x, x^2 = r, r a non-square mod p): the
    elements in a fixed order and chi of each."""
    p = next(p for p in range(2, q + 1) if q % p == 0)
    if q == p:
        elements = [(a, 0) for a in range(p)]
        r = 0
    elif q == p * p:
        elements = [(a, b) for a in range(p) for b in range(p)]
        r = next(r for r in range(2, p) if pow(r, (p - 1) // 2, p) == p - 1)
    else:  # pragma: no cover - _PALEY names only primes and squares of primes
        raise ValueError(f"GF({q}) is not built here")

    def mul(u: tuple[int, int], v: tuple[int, int]) -> tuple[int, int]:
        return ((u[0] * v[0] + r * u[1] * v[1]) % p, (u[0] * v[1] + u[1] * v[0]) % p)

    squares = {mul(z, z) for z in elements if z != (0, 0)}
    chi = {z: 0 if z == (0, 0) else (1 if z in squares else -1) for z in elements}
    return elements, chi


def _jacobsthal(q: int) -> torch.Tensor:
    elements, chi = _field(q)
    p = next(p for p in range(2, q + 1) if q % p == 0)
    return torch.tensor([[chi[((b[0] - a[0]) % p, (b[1] - a[1]) % p)] for b in elements]
                         for a in elements], dtype=torch.float64)


def _paley(kind: str, q: int) -> torch.Tensor:
    if kind == "double":
        h = _paley(*_PALEY[q])
        return torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    jac = _jacobsthal(q)
    ones = torch.ones(q, 1, dtype=torch.float64)
    if kind == "I":
        s = torch.cat([torch.cat([torch.zeros(1, 1, dtype=torch.float64), ones.T], 1),
                       torch.cat([-ones, jac], 1)])
        return torch.eye(q + 1, dtype=torch.float64) + s
    c = torch.cat([torch.cat([torch.zeros(1, 1, dtype=torch.float64), ones.T], 1),
                   torch.cat([ones, jac], 1)])
    a = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    return torch.kron(c, a) + torch.kron(torch.eye(q + 1, dtype=torch.float64), b)


@cache
def base_matrix(k: int) -> torch.Tensor:
    """The +-1 Hadamard matrix H_K (unnormalised, float64)."""
    if k == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    if k in _WILLIAMSON:
        return _williamson(*_WILLIAMSON[k])
    if k not in _PALEY:
        raise ValueError(f"no Hadamard matrix of order {k} is built here")
    return _paley(*_PALEY[k])


def circulant(row: str) -> torch.Tensor:
    """The circulant +-1 matrix whose row i is the first row shifted right by i."""
    first = torch.tensor([1.0 if c == "+" else -1.0 for c in row], dtype=torch.float64)
    return torch.stack([torch.roll(first, i) for i in range(len(row))])


def _williamson(*rows: str) -> torch.Tensor:
    a, b, c, d = (circulant(r) for r in rows)
    return torch.cat([torch.cat(blocks, 1) for blocks in
                      ((a, b, c, d), (-b, a, -d, c), (-c, d, a, -b), (-d, -c, b, a))])


def factor(n: int) -> tuple[int, int] | None:
    """(K, 2^m) with n = K * 2^m and K supported, the largest power of two; or None."""
    if n < 1:
        return None
    power = n & -n
    while power >= 1:
        if n // power in SUPPORTED_K:
            return n // power, power
        power //= 2
    return None


def nearest_supported(n: int, count: int = 2) -> list[int]:
    """The supported sizes closest to n (for error messages)."""
    sizes = sorted({k << m for k in SUPPORTED_K for m in range(0, 20) if (k << m) <= 4 * n + 4})
    return sorted(sorted(sizes, key=lambda s: (abs(s - n), s))[:count])


def check_size(n: int) -> tuple[int, int]:
    found = factor(n)
    if found is None:
        near = " or ".join(map(str, nearest_supported(n)))
        raise ValueError(f"no Hadamard transform of size {n}: sizes are K * 2^m with K in "
                         f"{', '.join(map(str, SUPPORTED_K))} (nearest: {near}); a random "
                         "orthogonal rotation ('orthogonal') works at any size")
    return found


@cache
def hadamard_matrix(n: int) -> torch.Tensor:
    """The orthonormal H_n = (H_K (x) H_{2^m}) / sqrt(n), float64."""
    k, power = check_size(n)
    sylvester = torch.ones(1, 1, dtype=torch.float64)
    while sylvester.shape[0] < power:
        sylvester = torch.cat([torch.cat([sylvester, sylvester], 1),
                               torch.cat([sylvester, -sylvester], 1)])
    return torch.kron(base_matrix(k), sylvester) / math.sqrt(n)


def fast_hadamard(x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """x @ H_n^T along the last axis in O(n log n) (butterflies for the 2^m factor, a
    K x K product for the other), equal to the dense hadamard_matrix(n); with
    `transpose`, x @ H_n (the inverse)."""
    n = x.shape[-1]
    k, power = check_size(n)
    y = x.reshape(*x.shape[:-1], k, power)
    h = 1
    while h < power:  # Sylvester: pairs (i, i + h) within blocks of 2h
        y = y.reshape(*y.shape[:-1], power // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        y = torch.stack([a + b, a - b], dim=-2).reshape(*x.shape[:-1], k, power)
        h *= 2
    if k > 1:
        base = base_matrix(k).T if transpose else base_matrix(k)
        y = torch.einsum("ij,...jp->...ip", base.to(y.dtype), y)
    return y.reshape(x.shape) / math.sqrt(n)
