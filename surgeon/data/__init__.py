"""Package data: the built-in calibration corpus."""
