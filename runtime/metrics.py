"""Image-quality metrics on model frames (float, [0, 1])."""
from __future__ import annotations

import numpy as np


def psnr_db(predicted: np.ndarray, target: np.ndarray, peak: float = 1.0) -> float:
    """PSNR in dB between two same-shape arrays with values in [0, ``peak``]; inf if identical."""
    if predicted.shape != target.shape:
        raise ValueError(f"psnr_db: shapes differ: {predicted.shape} vs {target.shape}")
    difference = np.subtract(predicted, target, dtype=np.float32)
    mse = float(np.mean(np.square(difference), dtype=np.float64))
    return float("inf") if mse == 0.0 else 10.0 * np.log10(peak * peak / mse)
