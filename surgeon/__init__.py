"""surgeon: a declarative model-surgery compiler.

spec text -> IR (surgeon.ir) -> torch.export graph (surgeon.capture)
-> passes (surgeon.passes) -> verify -> ONNX / checkpoint (surgeon.emit)
"""

from surgeon.ir import Spec

__version__ = "0.1.0"
__all__ = ["Spec", "__version__"]
