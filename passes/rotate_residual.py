"""rotate residual: one orthogonal Q on a pre-norm transformer's residual stream. Every
reader of the stream takes W Q (weights stored [out, in]; the embedding's rows E Q, the
lm_head included as a reader of the final norm) and every writer Q^T W, Q^T b (o_proj,
down_proj), so the stream carries x Q instead of x and the model computes the same
function: RMS normalisation commutes with Q (||x Q|| = ||x||) once its scale has been
folded into the readers (`fold norms`, required before). Math in float64, stored in the
weights' dtype; a weight shared by several readers (tied embeddings) is rotated once.

No mean-centring of the embeddings: QuaRot and SliceGPT centre them unconditionally,
which is only exact in front of a LayerNorm (it subtracts the mean anyway); in front of
an RMSNorm it changes the outputs. LayerNorm models are refused instead.

QuaRot ("QuaRot: Outlier-Free 4-Bit Inference in Rotated LLMs", Ashkboos et al.,
arXiv:2404.00456) rotates by a Hadamard matrix to spread activation outliers; SpinQuant
("SpinQuant: LLM Quantization with Learned Rotations", Liu et al., arXiv:2405.16406)
starts from random orthogonal ones.
"""

from __future__ import annotations

import torch
from torch import fx

from surgeon import hadamard, outliers
from surgeon.diagnostics import UserError
from surgeon.ir import RotateResidual
from surgeon.methods.rotate import ROTATIONS
from surgeon.registry import LayerPlan, Pass, PassContext, PassResult, register_pass
from surgeon.residual import ResidualStream, check_rotatable, find_stream
from surgeon.rewrite import finish, outputs_kept, set_param


def hadamard_rotation(d: int, seed: int, gram: torch.Tensor | None = None) -> torch.Tensor:
    try:
        return hadamard.hadamard_matrix(d)
    except ValueError as e:
        raise UserError(f"rotate residual hadamard: {e}") from None


def random_rotation(d: int, seed: int, gram: torch.Tensor | None = None) -> torch.Tensor:
    """Haar-distributed: QR of a Gaussian matrix, with R's diagonal signs moved into Q."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None, :]


def pca_rotation(d: int, seed: int, gram: torch.Tensor | None = None) -> torch.Tensor:
    """Eigenvectors of the stream's Gram as columns, largest eigenvalue first (SliceGPT's
    basis: slicing keeps the leading columns); each column's sign fixed so that its
    largest entry is positive (eigh's signs are arbitrary: same data, same bytes)."""
    assert gram is not None
    values, vectors = torch.linalg.eigh(gram.double())
    vectors = vectors.flip(1)
    rows = vectors.abs().argmax(0)
    return vectors * torch.sign(vectors[rows, torch.arange(d)])[None, :]


def _rotate(gm: fx.GraphModule, target: str, fn) -> None:
    w = gm.get_parameter(target)
    set_param(gm, target, fn(w.detach().double()).to(w.dtype))


def rotate(gm: fx.GraphModule, stream: ResidualStream, q: torch.Tensor) -> set[str]:
    """Apply Q to every reader and writer of the stream; returns the weights changed."""
    done: set[str] = set()
    reads = [stream.embedding.args[0].target] + [r.args[1].target for r in stream.readers]
    for target in reads:
        if target not in done:
            _rotate(gm, target, lambda w: w @ q)
            done.add(target)
    for writer in stream.writers:
        targets = [writer.args[1].target]
        bias = writer.args[2] if len(writer.args) > 2 else None
        if bias is not None:
            targets.append(bias.target)
        for target in targets:
            if target in done:
                raise UserError(f"rotate residual: {target} both reads and writes the stream")
            _rotate(gm, target, lambda w: q.T @ w)
            done.add(target)
    return done


@register_pass(RotateResidual)
class RotateResidualPass(Pass):
    name = "rotate_residual"
    invalidates_statistics = True  # exact outputs, but every linear's inputs are rotated

    def requires(self, ctx: PassContext, step: RotateResidual) -> None:
        outliers.request(ctx.stats, ctx.captured)
        if "gram" in ROTATIONS[step.method].needs:
            for path in self._gram_sites(ctx):
                ctx.stats.request(path, "gram")

    @staticmethod
    def _gram_sites(ctx: PassContext) -> list[str]:
        """One reader per norm on the stream: its input is the normalised stream there."""
        gm, prefix = ctx.captured.gm, ctx.captured.prefix
        stream = find_stream(gm, prefix, "rotate residual pca")
        return [s.readers[0].args[1].target.removeprefix(prefix).removesuffix(".weight")
                for s in stream.norms if s.readers]

    def run(self, ctx: PassContext, step: RotateResidual) -> PassResult:
        gm, prefix = ctx.captured.gm, ctx.captured.prefix
        what = f"rotate residual {step.method}"
        stream = find_stream(gm, prefix, what)
        check_rotatable(stream, gm, what)
        d = gm.get_parameter(stream.embedding.args[0].target).shape[1]
        gram = None
        if "gram" in ROTATIONS[step.method].needs:
            gram = sum(ctx.stats[p]["gram"] for p in self._gram_sites(ctx))
        q = ROTATIONS[step.method].function(d, step.seed, gram)
        batch = ctx.captured.data.calibration[0].inputs
        with torch.no_grad():
            before = gm(*batch)
        changed = rotate(gm, stream, q)
        finish(gm)
        outputs_kept(gm, batch, before, "the residual stream was not found whole")
        measured = outliers.details(ctx.stats, ctx.captured)
        plans = []
        for node in [stream.embedding, *stream.readers, *stream.writers]:
            w = gm.get_parameter(node.args[0 if node is stream.embedding else 1].target)
            path = node.args[0 if node is stream.embedding else 1].target
            plans.append(LayerPlan(
                path=path.removeprefix(prefix).removesuffix(".weight"), shape=tuple(w.shape),
                method=step.method, params_before=w.numel(), params_after=w.numel(),
                flops_before=0, flops_after=0,
                detail=measured.get(path.removeprefix(prefix).removesuffix(".weight"),
                                    outliers.OutlierDetail()),
                note="reads the stream: W Q" if node is not stream.embedding
                and node not in stream.writers else
                ("writes the stream: Q^T W" if node in stream.writers else "embedding: E Q")))
        return PassResult(modified=bool(changed), layers=plans)
