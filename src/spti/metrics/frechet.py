"""Fréchet distance between two sets of features (FID and its DINOv2 / CLIP / EfficientNet variants).

The computation follows pytorch-fid and clean-fid line by line (``scipy.linalg.sqrtm`` of the product of
the covariances, an ``eps`` offset on the diagonals when the product is singular, tiny imaginary parts
dropped and large ones an error), so that a number spti reports is comparable with numbers in papers that
used those libraries on the same features. Only numpy and scipy are needed.
"""

from __future__ import annotations

import warnings

import numpy as np

from spti.errors import InputError
from spti.log import logger

__all__ = ["feature_stats", "frechet_distance", "fid_from_features"]


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, ``ddof=1``) covariance of ``features`` (n, d), both float64.

    float64 because the covariance of 2048-d Inception features in float32 loses enough precision to move
    FID in the first decimal; clean-fid and pytorch-fid use float64 too.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise InputError(f"features must be a 2-d array (n_images, dim), got shape {f.shape}")
    if f.shape[0] < 2:
        raise InputError(f"need at least 2 images to estimate a covariance, got {f.shape[0]}")
    if not np.isfinite(f).all():
        raise InputError("features contain NaN or infinite values; the image embedder produced bad output")
    if f.shape[0] <= f.shape[1]:
        # Not an error (papers do report FID on few images), but the covariance is then singular and the
        # distance is biased upwards; the user should know why a number looks off.
        logger.warning(
            "Fréchet distance from %d images in %d dimensions: the covariance is singular and the distance "
            "is strongly biased; use more images than dimensions for a meaningful value",
            f.shape[0],
            f.shape[1],
        )
    mu = f.mean(axis=0)
    sigma = np.atleast_2d(np.cov(f, rowvar=False))
    return mu, sigma


def _sqrtm(a: np.ndarray) -> np.ndarray:
    from scipy import linalg

    with warnings.catch_warnings():
        # scipy < 1.16 warns "Matrix is singular and may not have a square root"; we check the result
        # ourselves (finite or not) exactly as pytorch-fid does, so the warning is only noise.
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
        except AttributeError:  # pragma: no cover - very old scipy
            pass
        return linalg.sqrtm(a)


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    *,
    eps: float = 1e-6,
    max_imag: float = 1e-3,
) -> float:
    """Fréchet distance ``||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½)`` between two Gaussians.

    Stable the way pytorch-fid/clean-fid are: when ``sqrtm(S1 S2)`` is not finite (singular product),
    ``eps`` is added to both diagonals and the root recomputed; an imaginary component (numerical error
    of the Schur method) is dropped when its diagonal is below ``max_imag`` and raises :class:`InputError`
    otherwise, since it then means the covariances are too degenerate for the result to mean anything.
    Rounding can make the distance of a set to itself come out as ``-1e-10``; it is clamped at 0 so that
    the result is always a valid distance.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape:
        raise InputError(f"mean vectors have different lengths: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise InputError(
            f"covariances must both be {mu1.shape[0]}x{mu1.shape[0]}, got {sigma1.shape} and {sigma2.shape}"
        )

    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        logger.warning("Fréchet distance: singular product of covariances; adding %g to the diagonals", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise InputError(
                "Fréchet distance: the covariance product has no finite square root even after adding "
                f"eps={eps} to the diagonals; the features are degenerate (too few or constant images)"
            )
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=max_imag):
            m = float(np.max(np.abs(covmean.imag)))
            raise InputError(
                f"Fréchet distance: matrix square root has an imaginary component of {m:.3g}; the "
                "covariances are too degenerate (use more images than feature dimensions)"
            )
        covmean = covmean.real
    fd = float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(fd, 0.0)


def fid_from_features(a: np.ndarray, b: np.ndarray, *, eps: float = 1e-6) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (n_a, d) and (n_b, d)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise InputError(f"feature sets must be (n, d) with the same d, got {a.shape} and {b.shape}")
    mu1, s1 = feature_stats(a)
    mu2, s2 = feature_stats(b)
    return frechet_distance(mu1, s1, mu2, s2, eps=eps)
