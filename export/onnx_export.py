"""`to_onnx`: a tokenizer's graphs through `torch.onnx.export(dynamo=True)`, a manifest, and verification.

Each graph of the family's plan (`export.plans`) is exported with its dynamic axes, saved as one
`.onnx` file (weights inside; external data only past protobuf's 2 GB limit) and described in
`manifest.json`. `verify=True` runs PyTorch and onnxruntime on the plan's inputs at the traced shape
and at two other shapes and fails with `ExportError` when ids differ or floats differ by more than
`tolerance`; the report is returned and written into the manifest either way.
"""

from __future__ import annotations

import copy
import inspect
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.errors import ConfigError, ExportError, UnsupportedError
from export.manifest import FORMAT, MANIFEST_NAME, checkpoint_hash, input_description, write_manifest
from export.plans import GraphPlan, plan_for

MIN_OPSET = 18


def to_onnx(
    tokenizer: Any,
    out_dir: str | os.PathLike,
    verify: bool = False,
    opset: int = 18,
    tolerance: float = 1e-4,
) -> dict[str, Any]:
    """Export `tokenizer`'s encoder/decoder graphs to `out_dir` (+ manifest.json); returns a summary dict."""
    from zoo.tokenizer import __version__

    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ConfigError(f"opset must be an integer >= {MIN_OPSET} (the dynamo exporter's minimum); got {opset!r}")
    _check_exportable(tokenizer)
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _cpu_float32(tokenizer)
    was_training = tok.training
    tok.eval()
    try:
        plan = plan_for(tok)
        graphs = {g.name: _export_graph(g, out, opset) for g in plan.graphs}
        report = _verify(plan.graphs, out, tolerance) if verify else None
    finally:
        tok.train(was_training)
    spec = tok.spec
    manifest = {
        "format": FORMAT,
        "tokenzoo_version": __version__,
        "name": tok.name,
        "family": tok.family,
        "variant": tok.variant,
        "opset": opset,
        "checkpoint": checkpoint_hash(tokenizer),
        "source": tok.source,
        "spec": spec.as_dict(),
        "input": input_description(spec),
        "graphs": graphs,
        "runtime": plan.runtime,
        "exporter": {"torch": torch.__version__, "onnx_opset": opset},
    }
    if report is not None:
        manifest["verification"] = report
    write_manifest(out, manifest)
    summary = {
        "out": str(out),
        "manifest": str(out / MANIFEST_NAME),
        "graphs": {name: {"file": g["file"], "bytes": g["bytes"]} for name, g in graphs.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    if report is not None:
        summary["verification"] = report
        bad = {name: r for name, r in report["graphs"].items() if not r["ok"]}
        if bad:
            raise ExportError(
                f"{tok.name}: onnxruntime disagrees with PyTorch for graph(s) {sorted(bad)}: {bad}. The graphs and a "
                f"manifest with this report are in {out} for inspection; do not deploy them."
            )
    return summary


def _check_exportable(tok: Any) -> None:
    reasons = {part: why for part, why in tok.spec.export.items() if why}
    if reasons.get("encoder"):
        raise UnsupportedError(f"{tok.name} cannot export its encoder: {reasons['encoder']}")


def _cpu_float32(tok: Any) -> Any:
    """The tokenizer on the CPU in float32 (a copy when it is not), like the example inputs of the plans."""
    on_cpu = all(t.device.type == "cpu" for t in [*tok.parameters(), *tok.buffers()])
    in_float32 = all(p.dtype == torch.float32 for p in tok.parameters())
    if on_cpu and in_float32:
        return tok
    copied = copy.deepcopy(tok).cpu()
    return copied if in_float32 else copied.float()


def _dynamic_shapes(module: torch.nn.Module, dims: tuple[Any, ...]) -> tuple[Any, ...]:
    """`dynamic_shapes` shaped like forward's signature: wrappers taking *args nest the per-input specs."""
    params = inspect.signature(module.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return (tuple(dims),)
    return tuple(dims)


def _export_graph(g: GraphPlan, out: Path, opset: int) -> dict[str, Any]:
    path = out / f"{g.name}.onnx"
    for stale in out.glob(f"{g.name}.onnx*"):
        stale.unlink()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                g.module, g.example, dynamo=True, opset_version=opset, input_names=list(g.inputs),
                dynamic_shapes=_dynamic_shapes(g.module, g.dynamic), verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; all mean the same to the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"torch.onnx.export failed for the {g.name!r} graph: {first}. This is a bug in the family's tensor path "
            "or in tokenzoo's export plan; please report it with this message."
        ) from exc
    program.save(str(path))  # one file; weights go to a side file only past protobuf's 2 GB limit
    files = list(out.glob(f"{g.name}.onnx*"))
    return {
        "file": path.name,
        "bytes": sum(p.stat().st_size for p in files),
        "external_data": any(p.name != path.name for p in files),
        **_signature(path),
    }


def _signature(path: Path) -> dict[str, Any]:
    """Inputs and outputs with their dtypes and (symbolic) shapes, read from the saved graph."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def describe(values: Any) -> list[dict[str, Any]]:
        rows = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_param or d.dim_value for d in t.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
            rows.append({"name": v.name, "dtype": dtype, "shape": shape})
        return rows

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def _verify(graphs: list[GraphPlan], out: Path, tolerance: float) -> dict[str, Any]:
    """Every graph at its traced shape and two others: ids equal, floats within `tolerance`."""
    import onnxruntime as ort

    report: dict[str, Any] = {"tolerance": tolerance, "graphs": {}}
    for g in graphs:
        session = ort.InferenceSession(str(out / f"{g.name}.onnx"), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        rows = []
        for inputs in [g.example, *g.checks]:
            expected = g.expected(*inputs)
            expected = expected if isinstance(expected, tuple | list) else (expected,)
            got = session.run(None, {n: a.numpy() for n, a in zip(names, inputs, strict=True)})
            rows.append(_compare(expected, got, [tuple(a.shape) for a in inputs], tolerance))
        floats = [r["max_abs_error"] for r in rows if r["max_abs_error"] is not None]
        report["graphs"][g.name] = {
            "ok": all(r["ok"] for r in rows),
            "ids_identical": all(r["ids_identical"] for r in rows if r["ids_identical"] is not None)
            if any(r["ids_identical"] is not None for r in rows) else None,
            "max_abs_error": max(floats) if floats else None,
            "cases": rows,
        }
    return report


def _compare(expected: Any, got: list[np.ndarray], shapes: list[tuple[int, ...]], tolerance: float) -> dict[str, Any]:
    ids_same: bool | None = None
    error: float | None = None
    ok = len(expected) == len(got)
    for want_t, have in zip(expected, got, strict=False):
        want = want_t.detach().cpu().numpy()
        if want.shape != have.shape:
            ok = False
            continue
        if np.issubdtype(want.dtype, np.integer) or want.dtype == np.bool_:
            same = bool(np.array_equal(want, have))
            ids_same = same if ids_same is None else ids_same and same
            ok = ok and same
        else:
            diff = float(np.abs(want.astype(np.float64) - have.astype(np.float64)).max()) if want.size else 0.0
            error = diff if error is None else max(error, diff)
            ok = ok and diff <= tolerance
    return {"input_shapes": shapes, "ok": ok, "ids_identical": ids_same, "max_abs_error": error}
