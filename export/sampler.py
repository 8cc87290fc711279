"""The flow-matching sampling loop of `zoo.layers.flow.sample`, in numpy, around exported velocity steps.

Same conventions (t = 0 noise to t = 1 data, dx/dt = velocity), time schedules, solvers and
classifier-free guidance with std rescaling, so a decode in onnxruntime follows the PyTorch decode
step for step. Diffusers schedulers are PyTorch objects and are not offered here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from export.errors import ConfigError, InputError

Velocity = Callable[[np.ndarray, np.ndarray], np.ndarray]
SOLVERS = ("euler", "midpoint", "rk2", "heun")


def time_grid(steps: int, schedule: str = "linear") -> list[float]:
    """t_0 = 0 < ... < t_steps = 1 for `linear`, `cosine`, `pow_<p>` or `shift_<s>` (as flow.time_grid)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InputError(f"steps must be a positive integer number of ODE steps, got {steps!r}; try steps=1 or 32")
    u = np.arange(steps + 1, dtype=np.float64) / steps
    name, _, arg = schedule.partition("_")
    if schedule == "linear":
        t = u
    elif schedule == "cosine":
        t = (1.0 - np.cos(np.pi * u)) / 2.0
    elif name in ("pow", "shift") and arg:
        try:
            value = float(arg)
        except ValueError:
            value = float("nan")
        if not np.isfinite(value) or value <= 0:
            raise ConfigError(f"schedule {schedule!r} needs a positive number after '_', e.g. 'pow_0.25'")
        if name == "pow":
            t = 1.0 - (1.0 - u) ** (1.0 / value)
        else:
            sigma = 1.0 - u
            t = 1.0 - value * sigma / (1.0 + (value - 1.0) * sigma)
    else:
        raise ConfigError(
            f"unknown flow time schedule {schedule!r}; use 'linear', 'cosine', 'pow_<p>' or 'shift_<s>'"
        )
    t[0], t[-1] = 0.0, 1.0
    return t.tolist()


def guide(cond: np.ndarray, uncond: np.ndarray, scale: float, rescale: float, min_std: float = 1e-6) -> np.ndarray:
    """u + s (c - u), then per-item std rescaling with weight `rescale` (unbiased std, as flow.guide)."""
    guided = uncond + np.float32(scale) * (cond - uncond)
    if rescale <= 0:
        return guided
    axes = tuple(range(1, guided.ndim))
    std_c = cond.std(axis=axes, ddof=1, keepdims=True)
    std_g = guided.std(axis=axes, ddof=1, keepdims=True)
    safe = std_g > min_std
    factor = np.where(safe, std_c / np.where(safe, std_g, 1.0), 1.0).astype(guided.dtype)
    return np.float32(rescale) * guided * factor + np.float32(1.0 - rescale) * guided


def sample(
    velocity: Velocity,
    noise: np.ndarray,
    times: Sequence[float],
    solver: str = "euler",
    cfg_scale: float = 1.0,
    rescale: float = 0.0,
    uncond: Velocity | None = None,
    cfg_interval: tuple[float, float] | None = None,
) -> np.ndarray:
    """Integrate dx/dt = v(x, t) over `times` from `noise`; guidance when `uncond` is given and cfg_scale != 1."""
    if solver not in SOLVERS:
        raise ConfigError(f"unknown flow solver {solver!r}; use one of {', '.join(SOLVERS)}")
    if not 0 <= rescale <= 1:
        raise ConfigError(f"CFG rescale weight must lie in [0, 1], got {rescale}")

    def v(x: np.ndarray, t: float) -> np.ndarray:
        at = np.full((x.shape[0],), t, dtype=x.dtype)
        cond = velocity(x, at)
        guided = uncond is not None and cfg_scale != 1.0
        if guided and cfg_interval is not None:
            guided = cfg_interval[0] <= t <= cfg_interval[1]
        if not guided:
            return cond
        assert uncond is not None
        return guide(cond, uncond(x, at), cfg_scale, rescale)

    x = noise
    for t0, t1 in zip(times[:-1], times[1:], strict=True):
        dt = float(t1) - float(t0)
        if solver == "euler":
            x = x + dt * v(x, t0)
        elif solver == "midpoint":
            x = x + dt * v(x, t0 + 0.5 * dt)
        elif solver == "rk2":
            half = x + (0.5 * dt) * v(x, t0)
            x = x + dt * v(half, t0 + 0.5 * dt)
        else:
            v0 = v(x, t0)
            x = x + (0.5 * dt) * (v0 + v(x + dt * v0, t1))
    return x
