"""surgeon: a declarative model-surgery compiler.

spec text -> IR (surgeon.ir) -> torch.export graph (surgeon.capture)
-> passes (surgeon.passes) -> verify (surgeon.verify) -> ONNX / checkpoint (surgeon.emit)
"""

from surgeon.api import apply, compile, load, plan
from surgeon.ir import Spec

__version__ = "0.1.0"
__all__ = ["Spec", "__version__", "apply", "compile", "load", "plan"]
