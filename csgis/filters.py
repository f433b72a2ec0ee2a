"""Classical structure-preserving smoothers (docs/method.md §7): uint8 RGB (H, W, 3) or gray (H, W) in,
uint8 of the same shape out.

`FILTERS` maps a short name to the function; every keyword has its default in the function
signature (the setting reported in the literature where one exists). `PARAM_GRIDS` holds a few
settings per filter for the validation search of scripts/baselines.py.

- l0   L0 gradient minimisation (Xu et al. 2011), own numpy FFT solver (see `l0`).
- rtv  Relative Total Variation (Xu et al. 2012), own scipy.sparse solver (see `rtv`).
- rgf  rolling guidance filter, cv2.ximgproc.rollingGuidanceFilter.
- gf   self-guided guided filter, cv2.ximgproc.guidedFilter per channel.
- bf   bilateral filter, cv2.bilateralFilter.
- btf  bilateral texture filter, cv2.ximgproc.bilateralTextureFilter.
- fgs  fast global smoother, cv2.ximgproc.fastGlobalSmootherFilter.
"""
from __future__ import annotations

import inspect
from typing import Callable

import cv2
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.ndimage import gaussian_filter


def _check_uint8(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected uint8 (H, W) or (H, W, 3) image, got {image.dtype} {image.shape}")


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 -> contiguous (H, W, 3) uint8."""
    _check_uint8(image)
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    return np.ascontiguousarray(image)


def _like_input(result: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Float [0, 1] or uint8 (H, W, 3) result -> uint8 with the input's shape (gray keeps channel 0)."""
    if result.dtype != np.uint8:
        result = np.clip(np.round(result * 255.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return np.ascontiguousarray(result[:, :, 0])
    return result


# --------------------------------------------------------------------------- L0 smoothing
def _difference_otf(shape: tuple[int, int], axis: int) -> np.ndarray:
    """Transfer function (rfft2) of the circular forward difference x[p+1] - x[p] along `axis`."""
    delta = np.zeros(shape)
    delta[0, 0] = 1.0
    response = np.roll(delta, -1, axis=axis) - delta
    return np.fft.rfft2(response)


def l0(image: np.ndarray, lambda_: float = 0.01, kappa: float = 2.0, beta_max: float = 1e5) -> np.ndarray:
    """L0 gradient minimisation (Xu et al. 2011) on [0, 1] RGB; lambda 0.01, kappa 2 = released setting.

    Half-quadratic splitting with circular boundaries, solved in the Fourier domain, as in the
    paper: beta grows from 2*lambda by `kappa` until `beta_max`. Written in numpy because
    cv2.ximgproc.l0Smooth of OpenCV 5.0 returns values far outside [0, 1] on 3-channel input
    (a clean step image comes back negative) and a ramp instead of a step on gray input.
    """
    rgb = _as_rgb(image)
    source = rgb.astype(np.float64) / 255.0
    height, width = source.shape[:2]
    otf_x = _difference_otf((height, width), axis=1)[:, :, None]
    otf_y = _difference_otf((height, width), axis=0)[:, :, None]
    source_spectrum = np.fft.rfft2(source, axes=(0, 1))
    gradient_energy = np.abs(otf_x) ** 2 + np.abs(otf_y) ** 2
    smoothed = source
    beta = 2.0 * lambda_
    while beta < beta_max:
        # h, v: auxiliary gradients; a pixel's gradient survives only if it pays for its L0 cost.
        h = np.roll(smoothed, -1, axis=1) - smoothed
        v = np.roll(smoothed, -1, axis=0) - smoothed
        flat = (h ** 2 + v ** 2).sum(axis=2, keepdims=True) < lambda_ / beta
        h = np.where(flat, 0.0, h)
        v = np.where(flat, 0.0, v)
        numerator = source_spectrum + beta * (np.conj(otf_x) * np.fft.rfft2(h, axes=(0, 1))
                                              + np.conj(otf_y) * np.fft.rfft2(v, axes=(0, 1)))
        smoothed = np.fft.irfft2(numerator / (1.0 + beta * gradient_energy), s=(height, width), axes=(0, 1))
        beta *= kappa
    return _like_input(smoothed, image)


# --------------------------------------------------------------------------- RTV
def rtv_weights(image: np.ndarray, sigma: float, sharpness: float = 0.02,
                eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """RTV smoothness weights u*w of Xu et al. 2012 for (H, W, C) float in [0, 1].

    Returns wx (H, W-1) for the edge between columns j and j+1 and wy (H-1, W) for rows i, i+1:
    u = G_sigma * 1 / (|G_sigma * dS| + eps)  (windowed inherent variation, paper eq. for u_x),
    w = 1 / (|dS| + sharpness)                (re-weighting of the windowed total variation),
    with channel magnitudes averaged, so one weight map serves all channels. (The authors' MATLAB
    release simplifies this: no outer Gaussian in u, gradient magnitude instead of |dS| in w.)
    """
    # G * dS == d(G * S) away from the border: blur the image once, then differentiate.
    blurred = gaussian_filter(image, sigma=(sigma, sigma, 0), mode="reflect", truncate=3.0)
    weights = []
    for axis in (1, 0):
        inherent = np.abs(np.diff(blurred, axis=axis)).mean(axis=2)
        u = gaussian_filter(1.0 / (inherent + eps), sigma=sigma, mode="reflect", truncate=3.0)
        w = 1.0 / (np.abs(np.diff(image, axis=axis)).mean(axis=2) + sharpness)
        weights.append(u * w)
    return weights[0], weights[1]


def rtv_system(wx: np.ndarray, wy: np.ndarray, lambda_: float) -> sp.csc_matrix:
    """Sparse (HW, HW) matrix 1 + lambda_ * (Dx^T diag(wx) Dx + Dy^T diag(wy) Dy), row-major pixels.

    It is the normal equation of sum (S - I)^2 + lambda_ * sum w (dS)^2 (forward differences,
    no flux across the image border); symmetric positive definite.
    """
    height, width = wy.shape[0] + 1, wx.shape[1] + 1
    n = height * width
    right = np.zeros((height, width))   # weight of the edge p -- p+1 (zero in the last column)
    right[:, :-1] = wx
    down = np.zeros((height, width))    # weight of the edge p -- p+W (zero in the last row)
    down[:-1, :] = wy
    right, down = right.ravel() * lambda_, down.ravel() * lambda_
    diagonal = 1.0 + right + down
    diagonal[1:] += right[:-1]
    diagonal[width:] += down[:-width]
    return sp.diags([diagonal, -right[:-1], -right[:-1], -down[:-width], -down[:-width]],
                    [0, 1, -1, width, -width], shape=(n, n), format="csc")


def rtv_solve(source: np.ndarray, wx: np.ndarray, wy: np.ndarray, lambda_: float) -> np.ndarray:
    """Solve rtv_system(wx, wy, lambda_) S = I for (H, W, C) float `source`; one factorisation, C solves."""
    height, width, channels = source.shape
    system = rtv_system(wx, wy, lambda_)
    # Sparse LU with a symmetric fill-reducing ordering: exact, and faster here than CG, which
    # the 1e4-range weight contrasts at edges make ill-conditioned (Jacobi: ~100 iterations per
    # channel; scipy's spilu preconditioner diverged).
    solve = spla.splu(system, permc_spec="MMD_AT_PLUS_A").solve
    rhs = source.reshape(height * width, channels)
    return solve(np.ascontiguousarray(rhs)).reshape(height, width, channels)


def rtv(image: np.ndarray, lambda_: float = 0.015, sigma: float = 3.0, iterations: int = 4,
        sharpness: float = 0.02, eps: float = 1e-3) -> np.ndarray:
    """Relative Total Variation texture removal (Xu et al. 2012) on [0, 1] RGB; docs/method.md §7: lambda 0.015, sigma 3.

    Minimises sum (S - I)^2 + lambda' * (D_x / (L_x + eps) + D_y / (L_y + eps)) by the paper's
    iteratively re-weighted linear systems (rtv_weights -> rtv_solve). Parameter conventions follow
    the authors' released tsmooth so literature values transfer: lambda' = lambda / 2, and sigma
    halves every iteration (never below 0.5). About 1 s for 256x256 on one CPU core.
    """
    rgb = _as_rgb(image)
    source = rgb.astype(np.float64) / 255.0
    if min(source.shape[:2]) < 2:
        return _like_input(rgb, image)
    smoothed = source
    sigma_now = sigma
    for _ in range(iterations):
        wx, wy = rtv_weights(smoothed, sigma_now, sharpness, eps)
        smoothed = rtv_solve(source, wx, wy, lambda_ / 2.0)
        sigma_now = max(sigma_now / 2.0, 0.5)
    return _like_input(smoothed, image)


# --------------------------------------------------------------------------- OpenCV wrappers
def rgf(image: np.ndarray, sigma_s: float = 4.0, sigma_r: float = 25.5, iterations: int = 4) -> np.ndarray:
    """Rolling guidance filter (Zhang et al. 2014) on uint8; sigma_r 25.5 = 0.1 on [0, 1] (docs/method.md §7)."""
    rgb = _as_rgb(image)
    out = cv2.ximgproc.rollingGuidanceFilter(rgb, None, -1, sigma_r, sigma_s, iterations)
    return _like_input(out, image)


def gf(image: np.ndarray, radius: int = 2, eps: float = 0.01) -> np.ndarray:
    """Self-guided guided filter (He et al. 2010), each channel its own guide, on [0, 1].

    Defaults = MATLAB imguidedfilter's (5x5 window, degree of smoothing 0.01 on [0, 1]), which
    also filters an RGB image channel by channel. The colour-guide form of
    cv2.ximgproc.guidedFilter is avoided: its float32 3x3 covariance is singular wherever the
    channels are equal (gray regions) and returned garbage there in tests (mean error 57 levels
    at eps 1e-6, non-monotonic in eps).
    """
    rgb = _as_rgb(image).astype(np.float32) / 255.0
    out = np.empty_like(rgb)
    for c in range(3):
        channel = np.ascontiguousarray(rgb[:, :, c])
        out[:, :, c] = cv2.ximgproc.guidedFilter(channel, channel, int(radius), float(eps))
    return _like_input(out, image)


def bf(image: np.ndarray, diameter: int = 9, sigma_color: float = 30.0, sigma_space: float = 5.0) -> np.ndarray:
    """Bilateral filter on uint8; sigma_color in uint8 levels, diameter <= 0 derives it from sigma_space."""
    rgb = _as_rgb(image)
    out = cv2.bilateralFilter(rgb, int(diameter), float(sigma_color), float(sigma_space))
    return _like_input(out, image)


def btf(image: np.ndarray, radius: int = 3, iterations: int = 3, sigma_alpha: float = -1.0,
        sigma_avg: float = -1.0) -> np.ndarray:
    """Bilateral texture filter (Cho et al. 2014) on uint8; negative sigmas are set as in the paper."""
    rgb = _as_rgb(image)
    out = cv2.ximgproc.bilateralTextureFilter(rgb, None, int(radius), int(iterations),
                                              float(sigma_alpha), float(sigma_avg))
    return _like_input(out, image)


def fgs(image: np.ndarray, lambda_: float = 400.0, sigma_color: float = 20.0,
        lambda_attenuation: float = 0.25, iterations: int = 3) -> np.ndarray:
    """Fast global smoother (Min et al. 2014), self-guided on uint8; sigma_color in uint8 levels."""
    rgb = _as_rgb(image)
    out = cv2.ximgproc.fastGlobalSmootherFilter(rgb, rgb, float(lambda_), float(sigma_color), None,
                                                float(lambda_attenuation), int(iterations))
    return _like_input(out, image)


FILTERS: dict[str, Callable[..., np.ndarray]] = {
    "l0": l0,
    "rtv": rtv,
    "rgf": rgf,
    "gf": gf,
    "bf": bf,
    "btf": btf,
    "fgs": fgs,
}

# Allowed range of every setting a user can give (a smoother spec, `csgis.data.blend`): (low, high,
# integer); low is exclusive for real-valued settings and inclusive for integers, high inclusive. The
# bounds keep every iterative filter to a bounded number of iterations (L0's beta grows by kappa from
# 2*lambda to beta_max: kappa >= 1.1 and lambda >= 1e-6 keep that under 300 steps) and every window
# to a finite size. AUTO: values with a meaning of their own (btf's -1: set as in the paper).
SETTING_RANGES: dict[str, dict[str, tuple]] = {
    "l0": {"lambda_": (1e-6, 10.0, False), "kappa": (1.1, 100.0, False), "beta_max": (1e-3, 1e8, False)},
    "rtv": {"lambda_": (0.0, 1.0, False), "sigma": (0.0, 50.0, False), "iterations": (1, 100, True),
            "sharpness": (0.0, 1.0, False), "eps": (0.0, 1.0, False)},
    "rgf": {"sigma_s": (0.0, 100.0, False), "sigma_r": (0.0, 1000.0, False), "iterations": (1, 100, True)},
    "gf": {"radius": (1, 512, True), "eps": (0.0, 10.0, False)},
    "bf": {"diameter": (0, 99, True), "sigma_color": (0.0, 1000.0, False), "sigma_space": (0.0, 50.0, False)},
    "btf": {"radius": (1, 50, True), "iterations": (1, 100, True), "sigma_alpha": (0.0, 1000.0, False),
            "sigma_avg": (0.0, 1000.0, False)},
    "fgs": {"lambda_": (0.0, 1e6, False), "sigma_color": (0.0, 1000.0, False),
            "lambda_attenuation": (0.0, 1.0, False), "iterations": (1, 100, True)},
}
AUTO = {"btf": {"sigma_alpha": -1.0, "sigma_avg": -1.0}}


def check_settings(name: str, params: dict, ranges: dict | None = None) -> None:
    """ValueError in one line naming the filter and setting unless every value of `params` (keyword
    names, e.g. lambda_) is a finite number within SETTING_RANGES[name] (or `ranges`)."""
    import math
    ranges = SETTING_RANGES.get(name, {}) if ranges is None else ranges
    for key, value in params.items():
        if key not in ranges:
            continue
        low, high, integer = ranges[key]
        shown = key.rstrip("_")
        if AUTO.get(name, {}).get(key) == value:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name}: {shown}={value!r} is not a finite number")
        if integer and value != int(value):
            raise ValueError(f"{name}: {shown}={value!r} must be a whole number")
        inside = low <= value <= high if integer else low < value <= high
        if not inside:
            bounds = f"[{low:g}, {high:g}]" if integer else f"({low:g}, {high:g}]"
            raise ValueError(f"{name}: {shown}={value:g} is out of range {bounds}")


# Validation grids (the default setting is always one of them). A choice at a grid's smallest or
# largest value is flagged (`csgis.evaluation.grid_edges`): a grid that stops short handicaps the
# smoother. Which choices still sit at an edge: docs/RESULTS.md notes (wider grids, 2026-12-03).
PARAM_GRIDS: dict[str, list[dict]] = {
    "l0": [{"lambda_": v} for v in (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.12)],
    "rtv": [{"lambda_": v} for v in (0.0025, 0.005, 0.01, 0.015, 0.03, 0.045)],
    "rgf": [{"sigma_s": s, "sigma_r": r} for s in (4.0, 8.0, 16.0, 24.0) for r in (25.5, 51.0, 76.5, 102.0)],
    "gf": [{"radius": r, "eps": e} for r in (2, 4, 8, 16, 32) for e in (0.005, 0.01, 0.04, 0.1, 0.2)],
    "bf": [{"diameter": d, "sigma_color": c, "sigma_space": s}
           for d, s in ((9, 5.0), (15, 10.0), (25, 15.0), (35, 20.0), (49, 30.0))
           for c in (30.0, 60.0, 90.0, 120.0, 160.0)],
    "btf": [{"radius": r, "iterations": i} for r in (1, 2, 3, 5, 7) for i in (1, 3, 5, 10)],
    "fgs": [{"lambda_": l, "sigma_color": c} for l in (100.0, 400.0, 1000.0, 3000.0, 10000.0, 30000.0)
            for c in (5.0, 7.0, 10.0, 20.0, 40.0)],
}


def apply_filter(name: str, image: np.ndarray, **params) -> np.ndarray:
    """FILTERS[name](image, **params), with a clear error for an unknown name."""
    if name not in FILTERS:
        raise KeyError(f"unknown filter '{name}'; known: {', '.join(FILTERS)}")
    return FILTERS[name](image, **params)


def default_params(name: str) -> dict:
    """The keyword defaults of FILTERS[name] (what it runs with when no setting is given)."""
    if name not in FILTERS:
        raise KeyError(f"unknown filter '{name}'; known: {', '.join(FILTERS)}")
    return {k: p.default for k, p in inspect.signature(FILTERS[name]).parameters.items()
            if p.default is not inspect.Parameter.empty}
