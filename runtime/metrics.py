"""Image-quality metrics on model frames (float, [0, 1])."""
from __future__ import annotations

from typing import Sequence

import numpy as np


# Exact copies have infinite PSNR; means over frames that include them cap each value here (an
# MSE of 1e-10, above any real difference of 8-bit frames) so that they stay finite.
PSNR_CAP_DB = 100.0


def psnr_db(predicted: np.ndarray, target: np.ndarray, peak: float = 1.0) -> float:
    """PSNR in dB between two same-shape arrays with values in [0, ``peak``]; inf if identical."""
    if predicted.shape != target.shape:
        raise ValueError(f"psnr_db: shapes differ: {predicted.shape} vs {target.shape}")
    difference = np.subtract(predicted, target, dtype=np.float32)
    mse = float(np.mean(np.square(difference), dtype=np.float64))
    return float("inf") if mse == 0.0 else 10.0 * np.log10(peak * peak / mse)


def ssim(predicted: np.ndarray, target: np.ndarray) -> float:
    """Mean SSIM of two RGB (3, H, W) frames in [0, 1] (Gaussian window, sigma 1.5, per channel).

    Wang et al. 2004 with K1=0.01, K2=0.03, data range 1; averaged over channels and pixels.
    """
    import cv2

    if predicted.shape != target.shape:
        raise ValueError(f"ssim: shapes differ: {predicted.shape} vs {target.shape}")
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    scores = []
    for x, y in zip(np.clip(predicted, 0, 1).astype(np.float64), target.astype(np.float64)):
        def blur(image: np.ndarray) -> np.ndarray:
            return cv2.GaussianBlur(image, (11, 11), 1.5)

        mu_x, mu_y = blur(x), blur(y)
        var_x = blur(x * x) - mu_x ** 2
        var_y = blur(y * y) - mu_y ** 2
        covariance = blur(x * y) - mu_x * mu_y
        score = ((2 * mu_x * mu_y + c1) * (2 * covariance + c2)) / \
            ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
        scores.append(float(score.mean()))
    return float(np.mean(scores))


def linear_slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` per index (0.0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(values)), np.asarray(values, dtype=np.float64), 1)[0])


def bootstrap_mean_interval(values: Sequence[float], resamples: int = 10_000, seed: int = 0,
                            level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (``resamples`` draws with
    replacement, seeded): (low, high). Consecutive video frames are not independent draws, so
    the interval says how the mean spreads over these frames, not over other footage."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return float("nan"), float("nan")
    draws = np.random.default_rng(seed).integers(0, data.size, (resamples, data.size))
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(data[draws].mean(axis=1), [tail, 100.0 - tail])
    return float(low), float(high)
