"""The IR: frozen pydantic models, one per spec statement, discriminated by `kind`.

The parser builds these directly; YAML and JSON specs validate into the same
models. Validators raise ValueError so the parser can report the statement's
file:line:col. Source spans ride along on every node but are excluded from
dumps and from equality: two specs are equal when they ask for the same thing.
`Spec.to_text()` prints canonical spec text that re-parses to an equal Spec.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from surgeon.diagnostics import UserError, hint_for

EMBEDDED_MODELS = ("minilm",)
FACTORIZE_METHODS = ("svd", "asvd", "svd_llm", "fwsvd")
PRUNE_METHODS = ("block_influence", "angular", "last", "first")
ADAPTER_METHODS = ("lora", "dora")
ADAPTER_INITS = ("zero", "gaussian", "pissa", "eva")
VERIFY_METRICS = {"cosine": ">=", "embedding_cosine": ">=", "rel_error": "<="}
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "bool")
MIN_OPSET, MAX_OPSET = 18, 23


class Span(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    line: int
    column: int
    end_line: int
    end_column: int


class Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    span: Span | None = Field(default=None, exclude=True, repr=False)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.model_dump() == other.model_dump()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash(json.dumps(self.model_dump(mode="json"), sort_keys=True))


def _num(x: float | int) -> str:
    """Shortest text that re-parses to the same number."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def _str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _unknown(what: str, value: str, known: tuple[str, ...] | list[str]) -> ValueError:
    hint = hint_for(value, known)
    msg = f"unknown {what} {value!r} (known: {', '.join(known)})"
    return ValueError(msg + (f"; {hint}" if hint else ""))


# ---------------------------------------------------------------- model + inputs
class ModelSource(Node):
    kind: Literal["model"] = "model"
    source: Literal["embedded", "hf", "python"]
    ref: str

    @field_validator("ref")
    @classmethod
    def _ref(cls, v: str, info: ValidationInfo) -> str:
        source = info.data.get("source")
        if not v:
            raise ValueError("model reference is empty")
        if source == "embedded" and v not in EMBEDDED_MODELS:
            raise _unknown("embedded model", v, EMBEDDED_MODELS)
        if source == "python" and ":" not in v:
            raise ValueError(f"python model {v!r} must be 'package.module:factory'")
        return v

    def to_text(self) -> str:
        prefix = {"embedded": "model", "hf": "model hf", "python": "model python"}[self.source]
        return f"{prefix} {_str(self.ref)}"


class InputSig(Node):
    kind: Literal["input"] = "input"
    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in DTYPES:
            raise _unknown("dtype", v, DTYPES)
        return v

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: tuple[int | str, ...]) -> tuple[int | str, ...]:
        if any(isinstance(d, int) and d < 1 for d in v):
            raise ValueError("static dimensions must be >= 1")
        return v

    def to_text(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"input {_str(self.name)} {self.dtype}[{dims}]"


_CALIBRATE_RANGES = {"samples": (1, 100_000), "seqlen": (2, 8192), "seed": (0, 2**63 - 1)}


class Calibrate(Node):
    kind: Literal["calibrate"] = "calibrate"
    corpus: Literal["builtin", "file", "random"] = "builtin"
    path: str | None = None
    samples: int = 64
    seqlen: int = 128
    seed: int = 0

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
        corpus = corpus or f"text {_str(self.path or '')}"
        return f"calibrate {corpus} samples {self.samples} seqlen {self.seqlen} seed {self.seed}"


# ---------------------------------------------------------------- factorize
class Rank(Node):
    kind: Literal["rank"] = "rank"
    value: int

    @field_validator("value")
    @classmethod
    def _value(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"rank must be >= 1, got {v}")
        return v

    def to_text(self) -> str:
        return f"rank {self.value}"


class _Percent(Node):
    """A share of parameters in (0, 100); spec text `<keyword> P%`."""

    keyword: ClassVar[str]
    percent: float

    @field_validator("percent")
    @classmethod
    def _percent(cls, v: float) -> float:
        if not 0 < v < 100:
            raise ValueError(f"{cls.keyword} must be between 0% and 100% (exclusive), "
                             f"got {_num(v)}%")
        return v

    def to_text(self) -> str:
        return f"{self.keyword} {_num(self.percent)}%"


class ParamsFraction(_Percent):
    """Each matched layer keeps this share of its own weights."""

    kind: Literal["params"] = "params"
    keyword: ClassVar[str] = "params"


class Energy(Node):
    kind: Literal["energy"] = "energy"
    fraction: float

    @field_validator("fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError(f"energy is a fraction of spectral energy in (0, 1], got {_num(v)}")
        return v

    def to_text(self) -> str:
        return f"energy {_num(self.fraction)}"


class Budget(_Percent):
    """A global parameter budget over every layer the target matches (SVD-LLM v2 style)."""

    kind: Literal["budget"] = "budget"
    keyword: ClassVar[str] = "budget"


RankSpec = Annotated[Rank | ParamsFraction | Energy | Budget, Field(discriminator="kind")]


class Factorize(Node):
    kind: Literal["factorize"] = "factorize"
    target: str
    rank: RankSpec
    method: str = "svd"
    alpha: float | None = None  # asvd's activation-scaling exponent (default 0.5)

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        from surgeon.targets import check_glob

        check_glob(v)
        return v

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v not in FACTORIZE_METHODS:
            raise _unknown("factorize method", v, FACTORIZE_METHODS)
        return v

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

    def to_text(self) -> str:
        alpha = f" alpha {_num(self.alpha)}" if self.alpha is not None else ""
        return f"factorize {_str(self.target)} {self.rank.to_text()} method {self.method}{alpha}"


# ---------------------------------------------------------------- prune layers
class PruneLayers(Node):
    """Drop whole blocks of a layer list: `remove N`, `keep N` or `where influence < t`."""

    kind: Literal["prune_layers"] = "prune_layers"
    layers: str  # module path of the layer list, e.g. encoder.layer
    mode: Literal["remove", "keep", "where"]
    count: int | None = None
    threshold: float | None = None
    by: str = "block_influence"

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: str) -> str:
        if not v or any(c in v for c in "*{}, ") or ".." in v:
            raise ValueError(f"prune layers takes a module path (like encoder.layer), got {v!r}")
        return v

    @field_validator("by")
    @classmethod
    def _by(cls, v: str) -> str:
        if v not in PRUNE_METHODS:
            raise _unknown("layer-pruning method", v, PRUNE_METHODS)
        return v

    @model_validator(mode="after")
    def _check(self) -> PruneLayers:
        if (self.mode == "where") != (self.threshold is not None):
            raise ValueError("'where influence < t' needs a threshold, and only it")
        if self.mode != "where" and (self.count is None or self.count < 0):
            raise ValueError(f"{self.mode} takes a layer count >= 0")
        if self.mode == "where" and self.by in ("last", "first"):
            raise ValueError(f"'where influence < t' needs scores; '{self.by}' has none")
        return self

    def to_text(self) -> str:
        amount = (f"where influence < {_num(self.threshold)}" if self.mode == "where"
                  else f"{self.mode} {self.count}")
        return f"prune layers {_str(self.layers)} {amount} by {self.by}"


# ---------------------------------------------------------------- adapters
class Adapter(Node):
    """Insert a trainable low-rank adapter beside each matched linear (base frozen).

    method dora adds DoRA's magnitude vector; rho > 1 (init eva only) lets EVA
    move rank between the matched layers, each keeping at most round(rank * rho).
    """

    kind: Literal["adapter"] = "adapter"
    method: str = "lora"
    target: str
    rank: int
    alpha: float
    dropout: float = 0.0
    init: str = "zero"
    rho: float = 1.0

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v not in ADAPTER_METHODS:
            raise _unknown("adapter method", v, ADAPTER_METHODS)
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        from surgeon.targets import check_glob

        check_glob(v)
        return v

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

    @field_validator("init")
    @classmethod
    def _init(cls, v: str) -> str:
        if v not in ADAPTER_INITS:
            raise _unknown("adapter init", v, ADAPTER_INITS)
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

    def to_text(self) -> str:
        rho = f" rho {_num(self.rho)}" if self.init == "eva" else ""
        return (f"adapter {self.method} {_str(self.target)} rank {self.rank} "
                f"alpha {_num(self.alpha)} dropout {_num(self.dropout)} init {self.init}{rho}")


class AdapterLoad(Node):
    """Insert the LoRA adapters of a PEFT directory (adapter_config.json + safetensors)."""

    kind: Literal["adapter_load"] = "adapter_load"
    path: str

    def to_text(self) -> str:
        return f"adapter load {_str(self.path)}"


class Fold(Node):
    """Merge every adapter into its base weight exactly (W + alpha/r * B A)."""

    kind: Literal["fold"] = "fold"

    def to_text(self) -> str:
        return "fold"


Step = Annotated[Factorize | PruneLayers | Adapter | AdapterLoad | Fold,
                 Field(discriminator="kind")]
PASS_TYPES = (Factorize, PruneLayers, Adapter, AdapterLoad, Fold)


# ---------------------------------------------------------------- checks + artifacts
class Verify(Node):
    kind: Literal["verify"] = "verify"
    metric: str
    op: Literal[">=", "<="]
    threshold: float

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in VERIFY_METRICS:
            raise _unknown("verify metric", v, list(VERIFY_METRICS))
        return v

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
        want = VERIFY_METRICS.get(metric or "", v)
        if v != want:
            raise ValueError(f"verify {metric} takes '{want}' (a lower bound), not '{v}'"
                             if want == ">=" else
                             f"verify {metric} takes '{want}' (an upper bound), not '{v}'")
        return v

    def to_text(self) -> str:
        return f"verify {self.metric} {self.op} {_num(self.threshold)}"


class ExportOnnx(Node):
    kind: Literal["export_onnx"] = "export_onnx"
    path: str
    opset: int = 18

    @field_validator("opset")
    @classmethod
    def _opset(cls, v: int) -> int:
        if not MIN_OPSET <= v <= MAX_OPSET:
            raise ValueError(
                f"opset {v} is not supported: the torch.export-based ONNX exporter "
                f"emits opsets {MIN_OPSET} to {MAX_OPSET}"
            )
        return v

    def to_text(self) -> str:
        return f"export onnx {_str(self.path)} opset {self.opset}"


class _PathOutput(Node):
    """An output written to one path; its spec text is `<keyword> "<path>"`."""

    keyword: ClassVar[str]
    path: str

    def to_text(self) -> str:
        return f"{self.keyword} {_str(self.path)}"


class Save(_PathOutput):
    """A surgeon checkpoint directory that surgeon.load() runs without the spec."""

    kind: Literal["save"] = "save"
    keyword: ClassVar[str] = "save"


class SaveHF(_PathOutput):
    """A transformers checkpoint (architecture-preserving steps only)."""

    kind: Literal["save_hf"] = "save_hf"
    keyword: ClassVar[str] = "save hf"


class Report(_PathOutput):
    """report.json (the --json report, without timings) and charts, in a directory."""

    kind: Literal["report"] = "report"
    keyword: ClassVar[str] = "report"


class SaveAdapters(_PathOutput):
    """PEFT-format adapter files (adapter_config.json + adapter_model.safetensors)."""

    kind: Literal["save_adapters"] = "save_adapters"
    keyword: ClassVar[str] = "save adapters"


Output = Annotated[ExportOnnx | Save | SaveHF | SaveAdapters | Report,
                   Field(discriminator="kind")]
OUTPUT_TYPES = (ExportOnnx, Save, SaveHF, SaveAdapters, Report)


class Spec(Node):
    kind: Literal["spec"] = "spec"
    model: ModelSource
    inputs: tuple[InputSig, ...] = ()
    calibrate: Calibrate = Calibrate()
    steps: tuple[Step, ...] = ()
    checks: tuple[Verify, ...] = ()
    outputs: tuple[Output, ...] = ()
    source_file: str | None = Field(default=None, exclude=True, repr=False)

    @field_validator("outputs")
    @classmethod
    def _distinct_outputs(cls, v: tuple[Any, ...]) -> tuple[Any, ...]:
        paths = [os.path.normpath(o.path) for o in v]
        dup = {p for p in paths if paths.count(p) > 1}
        if dup:
            raise ValueError(f"two outputs write the same path: {sorted(dup)}")
        return v

    @field_validator("inputs")
    @classmethod
    def _distinct_inputs(cls, v: tuple[InputSig, ...]) -> tuple[InputSig, ...]:
        names = [i.name for i in v]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"inputs declared twice: {sorted(dup)}")
        return v

    def to_text(self) -> str:
        parts: list[Node] = [self.model, *self.inputs, self.calibrate, *self.steps]
        parts += [*self.checks, *self.outputs]
        return "\n".join(p.to_text() for p in parts) + "\n"  # type: ignore[attr-defined]

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def parse(cls, text: str, file: str = "<spec>") -> Spec:
        from surgeon.parse import parse_spec

        return parse_spec(text, file)

    @classmethod
    def load(cls, path: str | Path) -> Spec:
        """Read a .surg, .yaml/.yml or .json spec; all three give the same IR."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot read spec {str(path)!r}: {e.strerror}") from None
        if path.suffix in (".yaml", ".yml", ".json"):
            return _load_structured(text, path)
        spec = cls.parse(text, str(path))
        return spec.model_copy(update={"source_file": str(path)})


def _load_structured(text: str, path: Path) -> Spec:
    import yaml
    from pydantic import ValidationError

    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{path}: not valid {path.suffix[1:].upper()}: {e}") from None
    try:
        spec = Spec.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg, _, hint = str(first["msg"]).removeprefix("Value error, ").partition("; did you mean")
        raise UserError(f"{path}: {loc}: {msg}",
                        f"did you mean{hint}" if hint else None) from None
    return spec.model_copy(update={"source_file": str(path)})


def step_name(step: Node) -> str:
    return getattr(step, "kind", type(step).__name__)
