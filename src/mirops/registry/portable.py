"""Models anyone can serve: a torch module exported with `torch.export`, logged as an MLflow pyfunc from code.

A served mirops model is a module `wave [B, clip samples] -> logits [B, classes]`. It is exported at the fixed
clip length with a dynamic batch dimension and logged with `waveform_pyfunc.py` as its code file, the
programs as its artifacts and torch/numpy/pandas/mlflow as its only requirements, so
`mlflow.pyfunc.load_model` works without mirops. A module with a front end (`frontend` with a `config()`,
and `forward_spectrogram`: every reprogrammed classifier and EAsT student) is exported as two programs, the
front end at batch 1 (AST's Kaldi fbank works one clip at a time) and the classifier on its frames, so
evaluation can still feed it the frames the precompute stage cached. Why torch.export and not TorchScript or
a pickle: docs/registry.md ("Serving").
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

from mirops.models.serving import ServingSpec
from mirops.registry import waveform_pyfunc as pyfunc
from mirops.registry.waveform_pyfunc import CLASSIFIER, CONFIG, FORWARD, FRONTEND, WAVE_COLUMN

FORMAT = "torch.export"      # MLmodel metadata `mirops_format` of a model logged here
MAX_BATCH = 4096             # the exported batch dimension's upper bound (windows per forward pass)
EXPORT_ATOL = 1e-4           # exported logits must match the module's on the example


class ExportError(RuntimeError):
    """The module could not be exported (or its export does not reproduce it)."""


def pyfunc_config(serving: ServingSpec, frontend_config: dict | None = None) -> dict:
    """What the pyfunc reads at load time (its `config` artifact)."""
    config = serving.to_json() | {"clip_samples": serving.window_samples}
    return config | ({"frontend_config": frontend_config} if frontend_config is not None else {})


def signature(serving: ServingSpec) -> ModelSignature:
    # Float64 arrays: JSON numbers arrive as float64, and MLflow refuses to narrow them to float32.
    return ModelSignature(
        inputs=Schema([ColSpec(Array(DataType.double), WAVE_COLUMN)]),
        outputs=Schema([ColSpec(DataType.double, c) for c in serving.classes]),
        params=ParamSchema([ParamSpec("output", DataType.string, pyfunc.OUTPUTS[0]),
                            ParamSpec("threshold", DataType.double, float(serving.threshold)),
                            ParamSpec("batch_size", DataType.long, pyfunc.DEFAULT_BATCH)]),
    )


def input_example(serving: ServingSpec) -> pd.DataFrame:
    """One clip-length waveform (what the model trained on): a 440 Hz tone, rounded so its JSON stays small."""
    t = np.arange(serving.window_samples) / serving.sample_rate
    return pd.DataFrame({WAVE_COLUMN: [np.round(0.3 * np.sin(2 * np.pi * 440.0 * t), 4)]})


class _Frames(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.forward_spectrogram(frames)


def has_frontend(model: torch.nn.Module) -> bool:
    frontend = getattr(model, "frontend", None)
    return callable(getattr(frontend, "config", None)) and callable(getattr(model, "forward_spectrogram", None))


def export_programs(model: torch.nn.Module, serving: ServingSpec, folder: Path) -> tuple[dict[str, str], dict | None]:
    """Export `model` (in eval mode) into `folder`: ({artifact name: .pt2 path}, the front end's config)."""
    model.eval()
    batch = {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}
    example = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, (2, serving.window_samples))
                               .astype(np.float32))
    programs: dict[str, torch.export.ExportedProgram] = {}
    try:
        with torch.no_grad():
            if has_frontend(model):
                programs[FRONTEND] = torch.export.export(model.frontend, (example[:1],), strict=False)
                frames = model.frontend(example)
                programs[CLASSIFIER] = torch.export.export(_Frames(model), (frames,), dynamic_shapes=(batch,),
                                                           strict=False)
            else:
                programs[FORWARD] = torch.export.export(model, (example,), dynamic_shapes=(batch,), strict=False)
            expected = model(example)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means the same thing here
        raise ExportError(f"torch.export cannot export {type(model).__name__} at {serving.window_samples} "
                          f"samples: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    paths = {}
    for name, program in programs.items():
        paths[name] = str(folder / f"{name}.pt2")
        torch.export.save(program, paths[name])
    frontend_config = model.frontend.config() if FRONTEND in programs else None
    check_export(expected, paths, pyfunc_config(serving, frontend_config), example)
    return paths, frontend_config


def check_export(expected: torch.Tensor, paths: dict[str, str], config: dict, example: torch.Tensor) -> None:
    """The saved programs, loaded back as the pyfunc loads them, reproduce the module's logits."""
    net = pyfunc.ExportedClassifier(config, {n: torch.export.load(p).module() for n, p in paths.items()})
    with torch.no_grad():
        got = net(example)
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=EXPORT_ATOL, rtol=0):
        worst = (got - expected).abs().max().item() if got.shape == expected.shape else float("nan")
        raise ExportError(f"the exported programs do not reproduce the module (logits {tuple(got.shape)} vs "
                          f"{tuple(expected.shape)}, largest difference {worst:.2e} > {EXPORT_ATOL})")


def requirements() -> list[str]:
    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
            f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]


def log_portable(model: torch.nn.Module, serving: ServingSpec, name: str, metadata: dict):
    """Export and log `model` in the active run under `name`; returns MLflow's ModelInfo. ExportError when
    it cannot be exported faithfully."""
    with tempfile.TemporaryDirectory(prefix="mirops-export-") as tmp:
        paths, frontend_config = export_programs(model, serving, Path(tmp))
        paths[CONFIG] = str(Path(tmp) / "config.json")
        Path(paths[CONFIG]).write_text(json.dumps(pyfunc_config(serving, frontend_config), indent=1))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=pyfunc.__file__,
            artifacts=paths,
            signature=signature(serving),
            input_example=input_example(serving),
            metadata={**metadata, "mirops_format": FORMAT},
            pip_requirements=requirements(),
        )
