"""The shared flow-matching sampler: schedules, solvers, guidance, diffusers schedulers, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from registry.errors import ConfigError, InputError
from zoo.layers.flow import draw_noise, evaluations_per_step, guide, make_scheduler, sample, time_grid


def exact_solution_problem():
    """dx/dt = cos(3t) * x0-independent drift + x-dependent decay: x' = cos(3t) - x, solvable in closed form."""

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.cos(3 * t)[:, None] - x

    def exact(x0: torch.Tensor) -> torch.Tensor:
        # x(t) = e^-t (x0 - 1/10) + (cos 3t + 3 sin 3t) / 10
        return math.exp(-1) * (x0 - 0.1) + (math.cos(3) + 3 * math.sin(3)) / 10

    return velocity, exact


def test_linear_grid_is_uniform_from_noise_to_data() -> None:
    t = time_grid(4)
    assert t.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_pow_schedule_follows_uniflows_rule() -> None:
    # UniFlow: ts = 1 - ((n - i) / n) ** (1 / p); p < 1 crowds the steps near the data end.
    n, p = 5, 0.25
    expected = [1 - ((n - i) / n) ** (1 / p) for i in range(n + 1)]
    t = time_grid(n, "pow_0.25")
    assert torch.allclose(t, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    steps = t.diff()
    assert bool((steps[1:] < steps[:-1]).all()), "pow_0.25 steps must shrink towards t = 1"


def test_shift_schedule_matches_the_sd3_noise_warp_and_cosine_is_symmetric() -> None:
    s, n = 3.0, 8
    sigma = 1 - torch.arange(n + 1, dtype=torch.float64) / n
    expected = 1 - s * sigma / (1 + (s - 1) * sigma)
    assert torch.allclose(time_grid(n, "shift_3.0"), expected, atol=1e-12)
    c = time_grid(n, "cosine")
    assert torch.allclose(c + c.flip(0), torch.ones_like(c), atol=1e-12)
    assert bool((c.diff() > 0).all())


@pytest.mark.parametrize("name", ["quadratic", "pow_", "pow_-1", "shift_x", "linear_2"])
def test_unknown_or_malformed_schedule_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="schedule"):
        time_grid(4, name)


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_steps_must_be_a_positive_integer(steps) -> None:
    with pytest.raises(InputError, match="positive integer"):
        time_grid(steps)


@pytest.mark.parametrize("solver", ["euler", "midpoint", "rk2", "heun"])
def test_every_solver_integrates_a_constant_velocity_exactly(solver: str) -> None:
    g = torch.Generator().manual_seed(0)
    noise, data = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    out = sample(lambda x, t: data - noise, noise, 3, solver=solver)
    assert float((out - data).abs().max()) < 1e-6


@pytest.mark.parametrize(("solver", "order"), [("euler", 1), ("midpoint", 1), ("rk2", 2), ("heun", 2)])
def test_solver_error_shrinks_at_its_order(solver: str, order: int) -> None:
    velocity, exact = exact_solution_problem()
    x0 = torch.linspace(-1, 1, 5, dtype=torch.float64)[None].repeat(2, 1)
    target = exact(x0)
    errors = [float((sample(velocity, x0, n, solver=solver) - target).abs().max()) for n in (16, 32, 64)]
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    for r in ratios:
        assert abs(math.log2(r) - order) < 0.35, f"{solver}: error ratios {ratios} do not show order {order}"


def tadicodec_reference(cond_fn, uncond_fn, noise, n, cfg, rescale):
    """TaDiCodec's reverse_diffusion loop as its README describes it, written out step by step."""
    x, h = noise, 1.0 / n
    for i in range(n):
        t = (i + 0.5) * h * torch.ones(x.shape[0], dtype=x.dtype)
        c, u = cond_fn(x, t), uncond_fn(x, t)
        g = u + cfg * (c - u)
        if rescale > 0 and float(g.std()) > 1e-6:
            g = rescale * (g * (c.std() / g.std())) + (1 - rescale) * g
        x = x + g * h
    return x


def toy_models():
    w = torch.randn(6, 6, generator=torch.Generator().manual_seed(3)) * 0.3

    def cond_fn(x, t):
        return torch.tanh(x @ w) + t[:, None, None]

    def uncond_fn(x, t):
        return 0.5 * torch.tanh(x @ w.T) - t[:, None, None]

    return cond_fn, uncond_fn


def test_midpoint_with_guidance_and_rescale_reproduces_tadicodecs_loop() -> None:
    cond_fn, uncond_fn = toy_models()
    noise = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(1))
    ref = tadicodec_reference(cond_fn, uncond_fn, noise, 32, 2.0, 0.75)
    ours = sample(cond_fn, noise, 32, solver="midpoint", cfg_scale=2.0, rescale=0.75, uncond_fn=uncond_fn)
    assert float((ours - ref).abs().max()) < 1e-5


def test_uniflows_pow_schedule_euler_loop() -> None:
    cond_fn, _ = toy_models()
    noise = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(2))
    n, p = 6, 0.5
    grid = [1 - ((n - i) / n) ** (1 / p) for i in range(n + 1)]
    x = noise
    for i in range(n):
        x = x + (grid[i + 1] - grid[i]) * cond_fn(x, torch.full((2,), grid[i]))
    ours = sample(cond_fn, noise, n, schedule="pow_0.5")
    assert float((ours - x).abs().max()) < 1e-5


def test_guide_identities() -> None:
    g = torch.Generator().manual_seed(4)
    c, u = torch.randn(3, 10, generator=g), torch.randn(3, 10, generator=g)
    assert torch.allclose(guide(c, u, 1.0), c, atol=1e-6)
    assert torch.allclose(guide(c, u, 0.0), u)
    full = guide(c, u, 4.0, rescale=1.0)
    assert abs(float(full.std()) - float(c.std())) < 1e-5
    per = guide(c, u, 4.0, rescale=1.0, per_sample=True)
    assert torch.allclose(per.std(dim=1), c.std(dim=1), atol=1e-5)
    flat = torch.zeros(2, 4)
    assert torch.equal(guide(flat, flat, 3.0, rescale=0.75), flat), "std(g) <= min_std keeps g as is"


def test_guidance_runs_only_when_asked_and_only_inside_its_interval() -> None:
    calls: list[float] = []

    def uncond(x, t):
        calls.append(float(t[0]))
        return torch.zeros_like(x)

    noise = torch.zeros(1, 3)
    sample(lambda x, t: torch.ones_like(x), noise, 4, cfg_scale=1.0, uncond_fn=uncond)
    assert calls == [], "cfg_scale 1 needs no unconditional pass"
    out = sample(lambda x, t: torch.ones_like(x), noise, 4, cfg_scale=2.0, uncond_fn=uncond, cfg_interval=(0.2, 0.6))
    assert calls == [0.25, 0.5]
    # outside the interval the velocity is 1, inside 2 (u + 2 (c - u) with u = 0): 0.25 * (1 + 2 + 2 + 1)
    assert torch.allclose(out, torch.full((1, 3), 1.5))


def test_evaluations_per_step_match_the_calls_made() -> None:
    for solver in ("euler", "midpoint", "rk2", "heun"):
        count = [0]

        def v(x, t, count=count):
            count[0] += 1
            return x

        sample(v, torch.ones(1, 2), 5, solver=solver)
        assert count[0] == 5 * evaluations_per_step(solver)
    assert evaluations_per_step("midpoint", guided=True) == 2


def test_explicit_time_grid_and_callback() -> None:
    seen = []
    out = sample(lambda x, t: torch.ones_like(x), torch.zeros(2, 2), 3, schedule=[0.0, 0.5, 0.9, 1.0],
                 callback=lambda i, t, x: seen.append((i, t, float(x[0, 0]))))
    assert torch.allclose(out, torch.ones(2, 2))
    assert [(i, round(t, 6), round(v, 6)) for i, t, v in seen] == [(0, 0.5, 0.5), (1, 0.9, 0.9), (2, 1.0, 1.0)]
    with pytest.raises(InputError, match="needs 4 times"):
        sample(lambda x, t: x, torch.zeros(1, 1), 3, schedule=[0.0, 1.0])
    with pytest.raises(InputError, match="increase"):
        sample(lambda x, t: x, torch.zeros(1, 1), 2, schedule=[0.0, 0.7, 0.5])


def test_diffusers_euler_scheduler_equals_euler_on_its_own_grid() -> None:
    pytest.importorskip("diffusers", reason="diffusers is not installed")
    from diffusers import FlowMatchEulerDiscreteScheduler

    cond_fn, _ = toy_models()
    noise = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(5))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    ours = sample(cond_fn, noise, 8, scheduler=scheduler)
    scheduler.set_timesteps(8)
    times = (1 - scheduler.sigmas.double()).tolist()  # diffusers' sigma is 1 - t; it ends at sigma = 0
    ref = sample(cond_fn, noise, len(times) - 1, schedule=times)
    assert float((ours - ref).abs().max()) < 1e-5
    by_name = sample(cond_fn, noise, 8, scheduler="FlowMatchEulerDiscreteScheduler")
    assert by_name.shape == noise.shape and bool(torch.isfinite(by_name).all())


def test_diffusers_heun_scheduler_is_second_order_accurate() -> None:
    pytest.importorskip("diffusers", reason="diffusers is not installed")
    velocity, exact = exact_solution_problem()
    x0 = torch.linspace(-1, 1, 4)[None].repeat(2, 1)
    heun = sample(velocity, x0, 16, scheduler="FlowMatchHeunDiscreteScheduler")
    euler = sample(velocity, x0, 16, scheduler="FlowMatchEulerDiscreteScheduler")
    target = exact(x0)
    assert float((heun - target).abs().max()) < float((euler - target).abs().max()) / 4


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(InputError, match="floating-point"):
        sample(lambda x, t: x, torch.zeros(2, 2, dtype=torch.long), 2)
    with pytest.raises(InputError, match="floating-point"):
        sample(lambda x, t: x, [[0.0]], 2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="solver"):
        sample(lambda x, t: x, torch.zeros(2, 2), 2, solver="rk4")
    with pytest.raises(ConfigError, match="rescale"):
        sample(lambda x, t: x, torch.zeros(2, 2), 2, rescale=1.5)
    with pytest.raises(ConfigError, match="no scheduler named"):
        make_scheduler("NotAScheduler")
    with pytest.raises(ConfigError, match="flow-matching"):
        sample(lambda x, t: x, torch.zeros(2, 2), 2, scheduler="DDPMScheduler")


def test_draw_noise_is_reproducible_with_a_generator() -> None:
    a = draw_noise((2, 3), torch.Generator().manual_seed(7), dtype=torch.float64)
    b = draw_noise((2, 3), torch.Generator().manual_seed(7), dtype=torch.float64)
    assert a.dtype == torch.float64 and torch.equal(a, b)
    assert torch.equal(a.float(), torch.randn(2, 3, generator=torch.Generator().manual_seed(7)))
