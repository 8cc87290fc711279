"""Flow-matching ODE sampling shared by the flow-decoder tokenizers (UniFlow pixels, TaDiCodec mel).

Convention (both upstreams use it): time runs from t = 0 (pure noise) to t = 1 (data), the model
predicts the velocity dx/dt = data - noise, and a sample is integrated forward from `noise`.
The sampler never looks inside the model: it calls `velocity_fn(x, t)` (conditional) and, for
classifier-free guidance, `uncond_fn(x, t)`; `t` is a 1-D tensor of length x.shape[0] in [0, 1]
(families scale it, e.g. UniFlow feeds 1000 * t). That keeps the loop around an exported single
velocity step (ONNX) exactly the same as around the PyTorch model.

Upstream samplers this reproduces:

- UniFlow `FlowDecoder.forward`: `schedule="linear"` or `"pow_<p>"`, `solver="euler"` (velocity at
  the left end of each interval), optional CFG without rescaling.
- TaDiCodec `reverse_diffusion`: linear grid, `solver="midpoint"` (one evaluation per step, at the
  middle of each interval), CFG whenever the scale is positive, then std rescaling with weight
  `rescale` (the guided velocity rescaled to the conditional one's std over the whole tensor).

A diffusers flow-matching scheduler (FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler,
...) can replace the built-in grid and solver: pass an instance or its class name as `scheduler`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from registry.errors import ConfigError, InputError

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SOLVERS = ("euler", "midpoint", "rk2", "heun")
"""`euler`: v(x_i, t_i). `midpoint`: v(x_i, (t_i + t_i+1) / 2), one evaluation a step (TaDiCodec's
"midpoint" Euler; still first order when v depends on x). `rk2`: the explicit midpoint method, v at a
half Euler step (two evaluations, second order). `heun`: trapezoid predictor-corrector (two
evaluations, second order)."""

_EVALS_PER_STEP = {"euler": 1, "midpoint": 1, "rk2": 2, "heun": 2}


def time_grid(steps: int, schedule: str = "linear", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Times t_0 = 0 < t_1 < ... < t_steps = 1 of a schedule, shape (steps + 1,).

    `linear`: uniform. `pow_<p>` (UniFlow): t_i = 1 - ((steps - i) / steps) ** (1 / p), so p < 1
    takes small steps near the data end. `shift_<s>` (SD3 / diffusers `shift`): noise level
    sigma = 1 - t warped as s * sigma / (1 + (s - 1) * sigma). `cosine`: t = (1 - cos(pi u)) / 2.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InputError(f"steps must be a positive integer number of ODE steps, got {steps!r}; try steps=1 or 32")
    u = torch.arange(steps + 1, dtype=torch.float64) / steps
    name, _, arg = schedule.partition("_")
    if schedule == "linear":
        t = u
    elif name == "pow" and arg:
        p = _parse_positive(schedule, arg)
        t = 1.0 - (1.0 - u) ** (1.0 / p)
    elif name == "shift" and arg:
        s = _parse_positive(schedule, arg)
        sigma = 1.0 - u
        t = 1.0 - s * sigma / (1.0 + (s - 1.0) * sigma)
    elif schedule == "cosine":
        t = (1.0 - torch.cos(math.pi * u)) / 2.0
    else:
        raise ConfigError(
            f"unknown flow time schedule {schedule!r}; use 'linear', 'cosine', 'pow_<p>' (e.g. 'pow_0.25') "
            "or 'shift_<s>' (e.g. 'shift_3.0')"
        )
    t[0], t[-1] = 0.0, 1.0
    return t.to(dtype)


def _parse_positive(schedule: str, arg: str) -> float:
    try:
        value = float(arg)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"schedule {schedule!r} needs a positive number after '_', e.g. 'pow_0.25'")
    return value


def guide(
    cond: torch.Tensor,
    uncond: torch.Tensor,
    cfg_scale: float,
    rescale: float = 0.0,
    per_sample: bool = False,
    min_std: float = 1e-6,
) -> torch.Tensor:
    """Classifier-free guidance u + s (c - u), then std rescaling (Lin et al. 2023, as TaDiCodec does).

    With `rescale` r > 0 the guided velocity g is mixed as r * g * std(c) / std(g) + (1 - r) * g, std
    unbiased over the whole tensor (upstream) or over each batch item (`per_sample`); where std(g) is
    at most `min_std` the guided velocity is kept as is.
    """
    guided = uncond + cfg_scale * (cond - uncond)
    if rescale <= 0:
        return guided
    if per_sample:
        dims = tuple(range(1, guided.dim()))
        std_c = cond.std(dim=dims, keepdim=True)
        std_g = guided.std(dim=dims, keepdim=True)
        safe = std_g > min_std
        factor = torch.where(safe, std_c / torch.where(safe, std_g, torch.ones_like(std_g)), torch.ones_like(std_g))
        return rescale * guided * factor + (1.0 - rescale) * guided
    std_g = guided.std()
    if not bool(std_g > min_std):
        return guided
    return rescale * (guided * (cond.std() / std_g)) + (1.0 - rescale) * guided


class _Velocity:
    """The (possibly guided) velocity at one (x, t), counting model evaluations."""

    def __init__(
        self,
        velocity_fn: VelocityFn,
        uncond_fn: VelocityFn | None,
        cfg_scale: float,
        rescale: float,
        cfg_interval: tuple[float, float] | None,
        rescale_per_sample: bool,
    ) -> None:
        self.velocity_fn = velocity_fn
        self.uncond_fn = uncond_fn
        self.cfg_scale = float(cfg_scale)
        self.rescale = float(rescale)
        self.cfg_interval = cfg_interval
        self.rescale_per_sample = rescale_per_sample
        self.evaluations = 0

    def guided_at(self, t: float) -> bool:
        if self.uncond_fn is None or self.cfg_scale == 1.0:
            return False
        if self.cfg_interval is None:
            return True
        low, high = self.cfg_interval
        return low <= t <= high

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        times = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        cond = self.velocity_fn(x, times)
        self.evaluations += 1
        if not self.guided_at(t):
            return cond
        assert self.uncond_fn is not None
        uncond = self.uncond_fn(x, times)
        self.evaluations += 1
        return guide(cond, uncond, self.cfg_scale, self.rescale, per_sample=self.rescale_per_sample)


def sample(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    steps: int,
    schedule: str | Sequence[float] | torch.Tensor = "linear",
    solver: str = "euler",
    cfg_scale: float = 1.0,
    rescale: float = 0.0,
    scheduler: Any = None,
    uncond_fn: VelocityFn | None = None,
    cfg_interval: tuple[float, float] | None = None,
    rescale_per_sample: bool = False,
    scheduler_kwargs: dict[str, Any] | None = None,
    callback: Callable[[int, float, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Integrate dx/dt = v(x, t) from `noise` at t = 0 to t = 1 in `steps` steps; returns x(1).

    `schedule` is a schedule name (see `time_grid`) or explicit increasing times from 0 to 1 (then
    `steps` must equal len - 1). Guidance runs when `uncond_fn` is given and `cfg_scale` != 1 (only
    inside `cfg_interval`, flow times, when set). `scheduler`: a diffusers flow-matching scheduler
    instance or class name; it then owns the times and the update rule (`schedule`, `solver` unused).
    `callback(i, t, x)` sees x after each step (e.g. to record a trajectory).
    """
    if not isinstance(noise, torch.Tensor) or not noise.is_floating_point():
        raise InputError(
            f"noise must be a floating-point torch.Tensor, got {type(noise).__name__}"
            + (f" of {noise.dtype}" if isinstance(noise, torch.Tensor) else "")
            + "; draw it with torch.randn(shape, generator=...)"
        )
    if solver not in SOLVERS:
        raise ConfigError(f"unknown flow solver {solver!r}; use one of {', '.join(SOLVERS)}")
    if rescale < 0 or rescale > 1:
        raise ConfigError(f"CFG rescale weight must lie in [0, 1], got {rescale}")
    velocity = _Velocity(velocity_fn, uncond_fn, cfg_scale, rescale, cfg_interval, rescale_per_sample)
    if scheduler is not None:
        return _sample_with_scheduler(velocity, noise, steps, scheduler, scheduler_kwargs or {}, callback)
    times = _times(schedule, steps)
    x = noise
    for i in range(len(times) - 1):
        t0, t1 = times[i], times[i + 1]
        dt = t1 - t0
        if solver == "euler":
            x = x + dt * velocity(x, t0)
        elif solver == "midpoint":
            x = x + dt * velocity(x, t0 + 0.5 * dt)
        elif solver == "rk2":
            half = x + (0.5 * dt) * velocity(x, t0)
            x = x + dt * velocity(half, t0 + 0.5 * dt)
        else:  # heun
            v0 = velocity(x, t0)
            predicted = x + dt * v0
            x = x + (0.5 * dt) * (v0 + velocity(predicted, t1))
        if callback is not None:
            callback(i, t1, x)
    return x


def evaluations_per_step(solver: str, guided: bool = False) -> int:
    """Model calls one step of `solver` costs (twice that with CFG); what decode-time scales with."""
    if solver not in _EVALS_PER_STEP:
        raise ConfigError(f"unknown flow solver {solver!r}; use one of {', '.join(SOLVERS)}")
    return _EVALS_PER_STEP[solver] * (2 if guided else 1)


def _times(schedule: str | Sequence[float] | torch.Tensor, steps: int) -> list[float]:
    if isinstance(schedule, str):
        return time_grid(steps, schedule).tolist()
    times = [float(t) for t in (schedule.tolist() if isinstance(schedule, torch.Tensor) else schedule)]
    if len(times) != steps + 1:
        raise InputError(f"an explicit time grid for {steps} steps needs {steps + 1} times, got {len(times)}")
    if any(b <= a for a, b in zip(times, times[1:], strict=False)) or times[0] < 0 or times[-1] > 1:
        raise InputError(f"explicit flow times must increase within [0, 1]; got {times}")
    return times


def make_scheduler(scheduler: Any, **config: Any) -> Any:
    """A diffusers scheduler from an instance (returned as is) or a class name such as
    'FlowMatchEulerDiscreteScheduler' (built with `config`)."""
    if not isinstance(scheduler, str):
        return scheduler
    try:
        import diffusers
    except ImportError as exc:  # pragma: no cover - diffusers is a dependency
        raise ConfigError("sampling through a diffusers scheduler needs diffusers: pip install diffusers") from exc
    cls = getattr(diffusers, scheduler, None)
    if cls is None or not hasattr(cls, "set_timesteps"):
        raise ConfigError(
            f"diffusers has no scheduler named {scheduler!r}; try 'FlowMatchEulerDiscreteScheduler' or "
            "'FlowMatchHeunDiscreteScheduler'"
        )
    return cls(**config)


def _sample_with_scheduler(
    velocity: _Velocity,
    noise: torch.Tensor,
    steps: int,
    scheduler: Any,
    set_kwargs: dict[str, Any],
    callback: Callable[[int, float, torch.Tensor], None] | None,
) -> torch.Tensor:
    """Drive a diffusers flow-matching scheduler: it uses noise level sigma = 1 - t and the velocity
    noise - data, the negative of ours; its timestep is sigma * num_train_timesteps."""
    scheduler = make_scheduler(scheduler)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InputError(f"steps must be a positive integer number of ODE steps, got {steps!r}")
    config = getattr(scheduler, "config", None)
    train_steps = float(getattr(config, "num_train_timesteps", 1000))
    if getattr(config, "prediction_type", "flow") not in ("flow", "flow_prediction"):
        raise ConfigError(
            f"{type(scheduler).__name__} predicts {config.prediction_type!r}; flow decoders need a flow-matching "
            "scheduler (FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler, ...)"
        )
    scheduler.set_timesteps(steps, device=noise.device, **set_kwargs)
    x = noise
    for i, timestep in enumerate(scheduler.timesteps):
        t = 1.0 - float(timestep) / train_steps
        v = velocity(x, t)
        x = scheduler.step(-v, timestep, x, return_dict=False)[0].to(noise.dtype)
        if callback is not None:
            callback(i, t, x)
    return x


def draw_noise(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Standard normal start noise; drawn on the generator's device and moved, so a CPU generator
    gives the same noise whatever device the model runs on."""
    gen_device = generator.device if generator is not None else device
    x = torch.randn(tuple(shape), generator=generator, dtype=torch.float32, device=gen_device)
    return x.to(device=device, dtype=dtype)


__all__ = [
    "SOLVERS",
    "VelocityFn",
    "draw_noise",
    "evaluations_per_step",
    "guide",
    "make_scheduler",
    "sample",
    "time_grid",
]
