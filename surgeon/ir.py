"""The IR: frozen pydantic models, one per spec statement, discriminated by `kind`.

Each statement is declared once, here: its fields (type, default, description,
validation) and how each is written in spec text (surgeon/syntax.py markers),
so the parser builds every node generically, `to_text()` prints canonical spec
text that re-parses to an equal node, and docs/language.md is generated from
these declarations (surgeon/docgen.py). Method names are checked against the
catalogues (surgeon/methods/). YAML and JSON specs validate into the same
models. Validators raise ValueError (or NodeError, naming the statement at
fault) so the parser can report file:line:col. Source spans ride along on
every node but are excluded from dumps and from equality.

A new pass statement is a `Step` subclass below (kinds register themselves;
a kind declared twice is refused) plus its pass file in passes/.
"""

from __future__ import annotations

import json
import math
import os
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from surgeon import syntax
from surgeon.diagnostics import hint_for
from surgeon.methods import adapter as adapter_methods
from surgeon.methods import factorize as factorize_methods
from surgeon.methods import prune as prune_methods
from surgeon.methods import rotate as rotate_methods
from surgeon.methods import sparsify as sparsify_methods
from surgeon.methods import verify as verify_metrics
from surgeon.syntax import Arg, Choice, Option
from surgeon.targets import check_glob

EMBEDDED_MODELS = ("minilm", "bytellama")
MODEL_DTYPES = ("float32", "bfloat16", "float16")
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "bool")
MIN_OPSET, MAX_OPSET = 18, 23

_KINDS: dict[str, type[Node]] = {}  # every declared kind, in declaration order


# Strict: a boolean is not a number and a string is not a number (YAML and JSON specs
# give `samples: true` or `rank: "8"` as they are), an integer field takes no float, and
# NaN or infinity is no number anywhere. A float field takes an integer.
_CONFIG = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class Span(BaseModel):
    model_config = _CONFIG
    line: int
    column: int
    end_line: int
    end_column: int


class NodeError(ValueError):
    """A validation error about one statement of a spec (the parser points at it)."""

    def __init__(self, message: str, node: Node):
        super().__init__(message)
        self.node = node


class Node(BaseModel):
    """A spec statement or part of one. `keyword` is its leading spec text."""

    model_config = _CONFIG
    keyword: ClassVar[str] = ""
    span: Span | None = Field(default=None, exclude=True, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _lists_as_tuples(cls, data: Any) -> Any:
        """Strict mode takes only tuples for tuple fields; YAML, JSON and the parser
        give lists."""
        if isinstance(data, dict) and any(isinstance(v, list) for v in data.values()):
            return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return data

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        kind = cls.model_fields.get("kind")
        if kind is None or not isinstance(kind.default, str):
            return  # an abstract base
        if kind.default in _KINDS:
            raise TypeError(f"IR kind {kind.default!r} is declared twice "
                            f"({_KINDS[kind.default].__name__}, {cls.__name__})")
        _KINDS[kind.default] = cls

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.model_dump() == other.model_dump()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash(json.dumps(self.model_dump(mode="json"), sort_keys=True))

    def to_text(self) -> str:
        """Canonical spec text, from the fields' syntax markers."""
        words = [self.keyword] if self.keyword else []
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            mark = syntax.marker(info.metadata)
            if isinstance(value, Node):
                words.append(value.to_text())
            elif value is None or mark is None:
                continue
            elif isinstance(mark, Arg):
                words.append(_fmt(value, mark.quoted) + mark.suffix)
            elif isinstance(mark, Choice):
                if value != info.default:
                    words.append(value)
            elif not (mark.omit_default and value == info.default):
                words += [(mark.keywords or (name,))[0], _fmt(value, mark.quoted)]
        return " ".join(words)


def node_class(kind: str) -> type[Node] | None:
    return _KINDS.get(kind)


def _num(x: float | int) -> str:
    """Shortest text that re-parses to the same number."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def _fmt(value: Any, quoted: bool) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if quoted else value
    return _num(value)


def _one_of(what: str, v: str, known: tuple[str, ...]) -> str:
    if v in known:
        return v
    hint = hint_for(v, known)
    raise ValueError(f"unknown {what} {v!r} (known: {', '.join(known)})"
                     + (f"; {hint}" if hint else ""))


def _check_target(v: str) -> str:
    check_glob(v)
    return v


Target = Annotated[str, AfterValidator(_check_target), Arg()]


# ---------------------------------------------------------------- model + inputs
class ModelSource(Node):
    """Where the model comes from: the embedded model, a local transformers
    directory (safetensors only), or a Python factory (needs --trust-code)."""

    kind: Literal["model"] = "model"
    keyword: ClassVar[str] = "model"
    source: Annotated[Literal["embedded", "hf", "python"], Choice()] = Field(
        "embedded", description="embedded (no keyword), hf (a local directory) or python "
                                "(a 'package.module:factory' reference)")
    ref: Annotated[str, Arg()] = Field(description="the embedded model's name, the directory, "
                                                   "or the factory")
    dtype: Annotated[str, Option(omit_default=True)] = Field(
        "float32", description="the dtype the model runs and is written in (statistics and "
                               "decompositions are computed in float32 or float64 regardless)")

    @field_validator("ref")
    @classmethod
    def _ref(cls, v: str, info: ValidationInfo) -> str:
        source = info.data.get("source")
        if not v:
            raise ValueError("model reference is empty")
        if source == "embedded":
            _one_of("embedded model", v, EMBEDDED_MODELS)
        if source == "python" and ":" not in v:
            raise ValueError(f"python model {v!r} must be 'package.module:factory'")
        return v

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        _one_of("model dtype", v, MODEL_DTYPES)
        return v


class InputSig(Node):
    """The input signature of a model without a tokenizer: `input "x" float32[batch, 16]`.
    Named dimensions are dynamic (batch gets the batch size, others seqlen)."""

    kind: Literal["input"] = "input"
    keyword: ClassVar[str] = "input"
    name: Annotated[str, Arg()] = Field(description="the forward argument's name")
    dtype: Annotated[str, Arg(quoted=False)] = Field(description=f"one of {', '.join(DTYPES)}")
    shape: Annotated[tuple[int | str, ...], Arg(quoted=False)] = Field(
        description="dimensions: a size >= 1, or a name for a dynamic axis")

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        return _one_of("dtype", v, DTYPES)

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: tuple[int | str, ...]) -> tuple[int | str, ...]:
        if any(isinstance(d, int) and d < 1 for d in v):
            raise ValueError("static dimensions must be >= 1")
        return v

    def to_text(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"input {_fmt(self.name, True)} {self.dtype}[{dims}]"


_CALIBRATE_RANGES = {"samples": (1, 100_000), "seqlen": (2, 8192), "seed": (0, 2**63 - 1)}


class Calibrate(Node):
    """Calibration data: `text "file"`, `text builtin` or `random` inputs. Held-out
    samples for `verify` are set apart and never calibrate."""

    kind: Literal["calibrate"] = "calibrate"
    keyword: ClassVar[str] = "calibrate"
    corpus: Annotated[Literal["builtin", "file", "random"], Choice()] = Field(
        "builtin", description="the built-in corpus, a text file (one sample per line) or "
                               "random inputs from the declared signature")
    path: Annotated[str | None, Option(("text",), quoted=True)] = Field(
        None, description="the text file (corpus file)")
    samples: Annotated[int, Option()] = Field(64, description="calibration samples")
    seqlen: Annotated[int, Option()] = Field(128, description="tokens per sample, at most")
    seed: Annotated[int, Option()] = Field(0, description="shuffles the text and seeds "
                                                          "random draws")

    @model_validator(mode="before")
    @classmethod
    def _file_when_path(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("path") is not None and "corpus" not in data:
            return {**data, "corpus": "file"}
        return data

    @model_validator(mode="after")
    def _check(self) -> Calibrate:
        if (self.corpus == "file") != (self.path is not None):
            raise ValueError("a text corpus file needs a path, and only it")
        return self

    @field_validator("samples", "seqlen", "seed")
    @classmethod
    def _in_range(cls, v: int, info: ValidationInfo) -> int:
        lo, hi = _CALIBRATE_RANGES[info.field_name or ""]
        if not lo <= v <= hi:
            raise ValueError(f"{info.field_name} must be between {lo} and {hi}, got {v}")
        return v

    def to_text(self) -> str:
        corpus = {"builtin": "text builtin", "random": "random"}.get(self.corpus)
        corpus = corpus or f"text {_fmt(self.path or '', True)}"
        return f"calibrate {corpus} samples {self.samples} seqlen {self.seqlen} seed {self.seed}"


# ---------------------------------------------------------------- rank choices
class Rank(Node):
    """Every matched layer gets rank N."""

    kind: Literal["rank"] = "rank"
    keyword: ClassVar[str] = "rank"
    value: Annotated[int, Arg(quoted=False)] = Field(description="the rank, >= 1")

    @field_validator("value")
    @classmethod
    def _value(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"rank must be >= 1, got {v}")
        return v


class _Percent(Node):
    """A share of parameters in (0, 100); spec text `<keyword> P%`."""

    percent: Annotated[float, Arg(quoted=False, suffix="%")] = Field(
        description="percent of the weights kept, in (0, 100)")

    @field_validator("percent")
    @classmethod
    def _percent(cls, v: float) -> float:
        if not 0 < v < 100:
            raise ValueError(f"{cls.keyword} must be between 0% and 100% (exclusive), "
                             f"got {_num(v)}%")
        return v


class ParamsFraction(_Percent):
    """Each matched layer keeps this share of its own weights."""

    kind: Literal["params"] = "params"
    keyword: ClassVar[str] = "params"


class Energy(Node):
    """Each layer keeps the smallest rank holding this fraction of its spectral energy."""

    kind: Literal["energy"] = "energy"
    keyword: ClassVar[str] = "energy"
    fraction: Annotated[float, Arg(quoted=False)] = Field(
        description="fraction of sigma^2 kept, in (0, 1]")

    @field_validator("fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError(f"energy is a fraction of spectral energy in (0, 1], got {_num(v)}")
        return v


class Budget(_Percent):
    """One parameter budget over every matched layer, spread across depth by
    truncation loss per parameter (SVD-LLM v2 style)."""

    kind: Literal["budget"] = "budget"
    keyword: ClassVar[str] = "budget"


RankSpec = Annotated[Rank | ParamsFraction | Energy | Budget, Field(discriminator="kind")]


# ---------------------------------------------------------------- passes
class Step(Node):
    """A pass statement; each subclass has one pass in passes/."""


class Factorize(Step):
    """Replace each matched linear by two thinner ones (rank-k factors of its weight)."""

    kind: Literal["factorize"] = "factorize"
    keyword: ClassVar[str] = "factorize"
    target: Target = Field(description="glob over linear layers' module paths")
    rank: RankSpec = Field(description="rank N, params P%, energy E or budget P%")
    method: Annotated[factorize_methods.METHODS.name_field, Option()] = Field(
        "svd", description="how W is approximated (a factorize method)")
    alpha: Annotated[float | None, Option()] = Field(
        None, description="asvd's activation-scaling exponent, in [0, 4] (default 0.5)")


    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is None:
            return v
        if info.data.get("method") != "asvd":
            raise ValueError("alpha applies to method asvd only")
        if not math.isfinite(v) or not 0 <= v <= 4:
            raise ValueError(f"alpha must be between 0 and 4, got {_num(v)}")
        return v


class PruneLayers(Step):
    """Drop whole blocks of a layer list: `remove N`, `keep N` or `where influence < t`."""

    kind: Literal["prune_layers"] = "prune_layers"
    keyword: ClassVar[str] = "prune layers"
    layers: Annotated[str, Arg()] = Field(
        description="module path of the layer list, e.g. encoder.layer")
    mode: Annotated[Literal["remove", "keep", "where"], Choice()] = Field(
        description="remove N blocks, keep N blocks, or remove those scoring below a threshold")
    count: Annotated[int | None, Option(("remove", "keep"))] = Field(
        None, description="how many blocks to remove or keep")
    threshold: Annotated[float | None, Option(("where",))] = Field(
        None, description="remove blocks whose score is below this")
    by: Annotated[prune_methods.SCORERS.name_field, Option()] = Field(
        "block_influence", description="which blocks go (a layer-pruning method)")

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: str) -> str:
        if not v or any(c in v for c in "*{}, ") or ".." in v:
            raise ValueError(f"prune layers takes a module path (like encoder.layer), got {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> PruneLayers:
        if (self.mode == "where") != (self.threshold is not None):
            raise ValueError("'where influence < t' needs a threshold, and only it")
        if self.mode != "where" and (self.count is None or self.count < 0):
            raise ValueError(f"{self.mode} takes a layer count >= 0")
        if self.mode == "where" and not prune_methods.SCORERS[self.by].extra["scores"]:
            raise ValueError(f"'where influence < t' needs scores; '{self.by}' has none")
        return self

    def to_text(self) -> str:
        amount = (f"where influence < {_num(self.threshold or 0)}" if self.mode == "where"
                  else f"{self.mode} {self.count}")
        return f"prune layers {_fmt(self.layers, True)} {amount} by {self.by}"


class Adapter(Step):
    """Insert a trainable low-rank adapter beside each matched linear (base frozen).

    method dora adds DoRA's magnitude vector; rho > 1 (init eva only) lets EVA
    move rank between the matched layers, each keeping at most round(rank * rho).
    """

    kind: Literal["adapter"] = "adapter"
    keyword: ClassVar[str] = "adapter"
    method: Annotated[adapter_methods.KINDS.name_field, Arg(quoted=False)] = Field(
        "lora", description="what sits beside the linear (an adapter method)")
    target: Target = Field(description="glob over linear layers' module paths")
    rank: Annotated[int, Option()] = Field(description="the adapter rank r, >= 1")
    alpha: Annotated[float, Option()] = Field(description="scaling numerator: the adapter "
                                                          "output is scaled by alpha/r")
    dropout: Annotated[float, Option()] = Field(0.0, description="dropout on the adapter's "
                                                                 "input while training, [0, 1)")
    init: Annotated[adapter_methods.INITS.name_field, Option()] = Field(
        "zero", description="how A and B start (an adapter init)")
    rho: Annotated[float, Option(omit_default=True)] = Field(
        1.0, description="EVA only: a layer may take up to round(rank * rho)")


    @field_validator("rank")
    @classmethod
    def _rank(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"rank must be >= 1, got {v}")
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"alpha must be a positive number, got {v}")
        return v

    @field_validator("dropout")
    @classmethod
    def _dropout(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError(f"dropout must be in [0, 1), got {_num(v)}")
        return v

    @field_validator("rho")
    @classmethod
    def _rho(cls, v: float) -> float:
        if not math.isfinite(v) or v < 1:
            raise ValueError(f"rho must be a number >= 1, got {_num(v)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> Adapter:
        if self.rho != 1 and self.init != "eva":
            raise ValueError("rho redistributes EVA's ranks; it needs 'init eva'")
        return self


class AdapterLoad(Step):
    """Insert the LoRA adapters of a PEFT directory (adapter_config.json + safetensors)."""

    kind: Literal["adapter_load"] = "adapter_load"
    keyword: ClassVar[str] = "adapter load"
    path: Annotated[str, Arg()] = Field(description="the PEFT adapter directory")


class Fold(Step):
    """Merge every adapter into its base weight exactly (W + alpha/r * B A)."""

    kind: Literal["fold"] = "fold"
    keyword: ClassVar[str] = "fold"


class FoldNorms(Step):
    """Move every norm's learned scale (and LayerNorm's shift) into the linears that read
    it, leaving the norms weightless; exact. Tied embeddings are untied first."""

    kind: Literal["fold_norms"] = "fold_norms"
    keyword: ClassVar[str] = "fold norms"


class RotateResidual(Step):
    """Rotate a pre-norm transformer's residual stream by one orthogonal Q: W Q on every
    reader, Q^T W on every writer; exact once the norms are folded (`fold norms`)."""

    kind: Literal["rotate_residual"] = "rotate_residual"
    keyword: ClassVar[str] = "rotate residual"
    method: Annotated[rotate_methods.ROTATIONS.name_field, Arg(quoted=False)] = Field(
        description="which orthogonal matrix (a rotation)")
    seed: Annotated[int, Option(omit_default=True)] = Field(
        0, description="seeds a random rotation")

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int) -> int:
        if not 0 <= v < 2**63:
            raise ValueError(f"seed must be between 0 and 2^63 - 1, got {v}")
        return v


class RotateHeads(Step):
    """Rotate each attention head's values by a Hadamard matrix: H^T on v_proj's output
    rows of every head, H on o_proj's matching input columns; exact."""

    kind: Literal["rotate_heads"] = "rotate_heads"
    keyword: ClassVar[str] = "rotate heads"


class RotateInputs(Step):
    """An online Hadamard transform on each matched linear's input (the surgeon::hadamard
    op), its inverse folded into the weight: W <- W H^T; exact (e.g. down_proj's input)."""

    kind: Literal["rotate_inputs"] = "rotate_inputs"
    keyword: ClassVar[str] = "rotate inputs"
    target: Target = Field(description="glob over linear layers' module paths")


class SliceResidual(Step):
    """SliceGPT: rotate each segment of a pre-norm residual stream into its principal
    directions and delete the smallest P% of them (needs `fold norms` before)."""

    kind: Literal["slice_residual"] = "slice_residual"
    keyword: ClassVar[str] = "slice residual"
    percent: Annotated[float, Arg(quoted=False, suffix="%")] = Field(
        description="share of the stream's dimensions deleted, in (0, 100)")

    @field_validator("percent")
    @classmethod
    def _percent(cls, v: float) -> float:
        if not 0 < v < 100:
            raise ValueError(f"slice residual must be between 0% and 100% (exclusive), "
                             f"got {_num(v)}%")
        return v


class Sparsify(Step):
    """Zero the low-scoring entries of each matched linear's input at thresholds calibrated
    to a target share of zeros (training-free activation sparsity: TEAL, WINA, CATS,
    R-Sparse; LaRoSA rotates first and keeps a top-k per token), so a decode kernel can
    skip the weight columns they would meet."""

    kind: Literal["sparsify"] = "sparsify"
    keyword: ClassVar[str] = "sparsify"
    target: Target = Field(description="glob over linear layers' module paths")
    percent: Annotated[float, Arg(quoted=False, suffix="%")] = Field(
        description="target share of zeroed input entries, weighted by the matched "
                    "linears' parameters, in (0, 99]")
    by: Annotated[sparsify_methods.CRITERIA.name_field, Option()] = Field(
        "teal", description="what is ranked (a sparsity criterion)")
    allocate: Annotated[Literal["uniform", "greedy"], Option(omit_default=True)] = Field(
        "uniform", description="uniform: every linear at the target; greedy: TEAL's search, "
                               "more where the output error grows least")
    rank: Annotated[int | None, Option()] = Field(
        None, description="rsparse's rank r of the low-rank copy of each weight")

    @field_validator("percent")
    @classmethod
    def _percent(cls, v: float) -> float:
        if not 0 < v <= 99:
            raise ValueError(f"sparsify takes a share between 0% (exclusive) and 99%, "
                             f"got {_num(v)}%")
        return v

    @model_validator(mode="after")
    def _rank(self) -> Sparsify:
        lowrank = sparsify_methods.CRITERIA[self.by].extra["lowrank"]
        if lowrank and (self.rank is None or self.rank < 1):
            raise ValueError(f"sparsify by {self.by} needs `rank N` (N >= 1): the rank of "
                             "each weight's low-rank copy")
        if not lowrank and self.rank is not None:
            raise ValueError(f"rank applies to sparsify by rsparse only, not {self.by}")
        return self


class Kernels(Step):
    """Put surgeon's fused kernel ops in the graph: a sparsify mask and the linears reading
    it become surgeon::sparse_linear, a factorized pair surgeon::lowrank_linear (Triton on
    a GPU for a few tokens, torch elsewhere); exact."""

    kind: Literal["kernels"] = "kernels"
    keyword: ClassVar[str] = "kernels"
    backend: Annotated[Literal["triton"], Arg(quoted=False)] = Field(
        description="which kernels: triton (the torch reference runs where it cannot)")

    @field_validator("backend", mode="before")
    @classmethod
    def _backend(cls, v: object) -> object:
        if isinstance(v, str) and v != "triton":
            raise ValueError(f"unknown kernel backend {v!r} (known: triton)")
        return v


# ---------------------------------------------------------------- checks + artifacts
class Verify(Node):
    """Fail the compile (exit 3) unless a fidelity metric on held-out inputs meets a bound."""

    kind: Literal["verify"] = "verify"
    keyword: ClassVar[str] = "verify"
    metric: Annotated[verify_metrics.METRICS.name_field, Arg(quoted=False)] = Field(
        description="what is measured (a verify metric)")
    op: Annotated[Literal[">=", "<="], Arg(quoted=False)] = Field(
        description="the metric's bound: >= for similarities, <= for errors")
    threshold: Annotated[float, Arg(quoted=False, hundredths=True)] = Field(
        description="a finite number >= 0; a percentage is hundredths (5% is 0.05)")

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"verify threshold must be a finite number >= 0, got {v}")
        return v

    @field_validator("op")
    @classmethod
    def _op(cls, v: str, info: ValidationInfo) -> str:
        metric = info.data.get("metric")
        want = verify_metrics.METRICS[metric].extra["bound"] if metric else v
        if v != want:
            raise ValueError(f"verify {metric} takes '{want}' (a lower bound), not '{v}'"
                             if want == ">=" else
                             f"verify {metric} takes '{want}' (an upper bound), not '{v}'")
        return v


class Output(Node):
    """An artifact written to one path, once every check passed."""

    path: Annotated[str, Arg()] = Field(description="where to write it")


class ExportOnnx(Output):
    """An ONNX model, checked by onnx.checker and against onnxruntime."""

    kind: Literal["export_onnx"] = "export_onnx"
    keyword: ClassVar[str] = "export onnx"
    opset: Annotated[int, Option()] = Field(18, description=f"ONNX opset, {MIN_OPSET} to "
                                                            f"{MAX_OPSET}")

    @field_validator("opset")
    @classmethod
    def _opset(cls, v: int) -> int:
        if not MIN_OPSET <= v <= MAX_OPSET:
            raise ValueError(
                f"opset {v} is not supported: the torch.export-based ONNX exporter "
                f"emits opsets {MIN_OPSET} to {MAX_OPSET}"
            )
        return v


class Save(Output):
    """A surgeon checkpoint directory that surgeon.load() runs without the spec."""

    kind: Literal["save"] = "save"
    keyword: ClassVar[str] = "save"


class SaveHF(Output):
    """A transformers checkpoint (architecture-preserving steps only)."""

    kind: Literal["save_hf"] = "save_hf"
    keyword: ClassVar[str] = "save hf"


class SaveAdapters(Output):
    """PEFT-format adapter files (adapter_config.json + adapter_model.safetensors)."""

    kind: Literal["save_adapters"] = "save_adapters"
    keyword: ClassVar[str] = "save adapters"


class Report(Output):
    """report.json (the --json report, without timings) and charts, in a directory."""

    kind: Literal["report"] = "report"
    keyword: ClassVar[str] = "report"


STEP_TYPES = tuple(c for c in _KINDS.values() if issubclass(c, Step))
OUTPUT_TYPES = tuple(c for c in _KINDS.values() if issubclass(c, Output))
AnyStep = Annotated[Union[STEP_TYPES], Field(discriminator="kind")]  # noqa: UP007
AnyOutput = Annotated[Union[OUTPUT_TYPES], Field(discriminator="kind")]  # noqa: UP007


class Spec(Node):
    kind: Literal["spec"] = "spec"
    model: ModelSource
    inputs: tuple[InputSig, ...] = ()
    calibrate: Calibrate = Calibrate()
    steps: tuple[AnyStep, ...] = ()
    checks: tuple[Verify, ...] = ()
    outputs: tuple[AnyOutput, ...] = ()
    source_file: str | None = Field(default=None, exclude=True, repr=False)

    @field_validator("outputs")
    @classmethod
    def _distinct_outputs(cls, v: tuple[Output, ...]) -> tuple[Output, ...]:
        _distinct(v, lambda o: os.path.normpath(o.path), "two outputs write the same path {!r}")
        return v

    @field_validator("inputs")
    @classmethod
    def _distinct_inputs(cls, v: tuple[InputSig, ...]) -> tuple[InputSig, ...]:
        _distinct(v, lambda i: i.name, "input {!r} is declared twice")
        return v

    def to_text(self) -> str:
        parts: list[Node] = [self.model, *self.inputs, self.calibrate, *self.steps]
        parts += [*self.checks, *self.outputs]
        return "\n".join(p.to_text() for p in parts) + "\n"

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _distinct(nodes: tuple[Any, ...], key: Any, message: str) -> None:
    seen: set[Any] = set()
    for node in nodes:
        if key(node) in seen:
            raise NodeError(message.format(key(node)), node)
        seen.add(key(node))
