"""Why rotate, measured: the outliers of every linear layer's input before and after a
rotation step (kurtosis and max |x| / rms per token, averaged over the calibration
tokens; observers in surgeon/observers.py). A rotation spreads a few large channels
over all of them, so both fall towards a Gaussian's (3, and about sqrt(2 ln d)).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from surgeon.calibration import CalibrationStats
from surgeon.capture import Captured

MEASURES = ("kurtosis", "peak_ratio")


class OutlierDetail(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: str = "outliers"
    kurtosis_before: float | None = None
    kurtosis_after: float | None = None
    peak_ratio_before: float | None = None
    peak_ratio_after: float | None = None


def request(stats: CalibrationStats, captured: Captured) -> None:
    """Ask for the measures on every linear's input (before the rotation)."""
    for path in captured.linear_sites():
        stats.request(path, *MEASURES)


def details(before: CalibrationStats, captured: Captured) -> dict[str, OutlierDetail]:
    """Per linear path, the measures before (`before`) and after (collected now, on the
    graph as the rotation left it)."""
    after = CalibrationStats(captured)
    request(after, captured)
    after.collect()
    out = {}
    for path in captured.linear_sites():
        b = before.layers.get(path)
        a = after[path]
        out[path] = OutlierDetail(
            kurtosis_before=float(b["kurtosis"]) if b and "kurtosis" in b else None,
            kurtosis_after=float(a["kurtosis"]),
            peak_ratio_before=float(b["peak_ratio"]) if b and "peak_ratio" in b else None,
            peak_ratio_after=float(a["peak_ratio"]))
    return out
