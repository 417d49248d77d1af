"""The pyfunc of every model mirops logs: waveforms in, one probability per class out.

MLflow loads this file itself ("models from code": it is copied into each logged model, beside the exported
programs it runs), so it imports only mlflow, numpy, pandas and torch: the model serves where mirops is not
installed. `mirops predict` runs the same class, so the CLI and `mlflow.pyfunc.load_model` cannot disagree.

Input: a DataFrame with one column `wave`, one mono waveform per row (a 1-D float array or list of any length,
at the model's sample rate). Called directly (`unwrap_python_model().predict(None, x)`), a list of 1-D arrays,
a 2-D array (rows of equal length) or one 1-D array are accepted too. Each waveform is cut into clip-length
windows as training saw them (`mirops.features.windows`: consecutive windows, the last one aligned to the
end, a short file right-padded with silence); the window probabilities (sigmoid of the logits) are averaged.
Output: a DataFrame, one row per waveform, one column per class (probabilities); with
`params={"output": "positive"}`, booleans (probability >= `threshold`, default the model's).
"""

from __future__ import annotations

import json
import math

import mlflow
import numpy as np
import pandas as pd
import torch

WAVE_COLUMN = "wave"
OUTPUTS = ("probabilities", "positive")
DEFAULT_BATCH = 16  # windows per forward pass
# The artifacts of a logged model: a module with a front end is exported as two programs (the front end at
# batch 1, the classifier on its frames with a dynamic batch), so evaluation can feed it cached frames; any
# other waveform -> logits module as one program.
FRONTEND, CLASSIFIER, FORWARD = "frontend", "classifier", "forward"
# ... and the JSON the pyfunc reads at load time (not MLflow's `model_config`: that is also logged as the
# run's params, where it would clash with training's own).
CONFIG = "config"


def window_starts(length: int, n: int) -> list[int]:
    """Where the clip-length windows of a waveform of `length` samples start (see `windows`)."""
    if length <= n:
        return [0]
    return [i * n for i in range(math.ceil(length / n) - 1)] + [length - n]


def windows(wave: np.ndarray, n: int) -> np.ndarray:
    """Windows [W, n] covering `wave`: the same cut as `mirops.features.windows.windows`."""
    if len(wave) < n:
        return np.pad(wave, (0, n - len(wave)))[None]
    return np.stack([wave[s : s + n] for s in window_starts(len(wave), n)])


class _Static(torch.nn.Module):
    """Exported programs have no training mode (their `.train()` raises): `eval()` on us is a no-op."""

    def train(self, mode: bool = True) -> _Static:
        return self


class ExportedFrontend(_Static):
    """The front-end program (exported at batch 1), over a batch one clip at a time; `config()` is what the
    original front end's was, so frames cached under it are reused."""

    def __init__(self, program: torch.nn.Module, config: dict) -> None:
        super().__init__()
        self.program, self._config = program, dict(config)

    def config(self) -> dict:
        return dict(self._config)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.program(clip[None]) for clip in wave])


class ExportedClassifier(_Static):
    """Windows [B, clip samples] -> logits [B, classes], from the exported programs of a logged model; with
    a front end, also `frontend` and `forward_spectrogram` (frames -> logits), as mirops' own modules have."""

    def __init__(self, config: dict, programs: dict[str, torch.nn.Module]) -> None:
        super().__init__()
        self.sample_rate, self.clip_samples = int(config["sample_rate"]), int(config["clip_samples"])
        self.classes = list(config["classes"])
        if FORWARD in programs:
            self.program = programs[FORWARD]
        else:
            self.frontend = ExportedFrontend(programs[FRONTEND], config["frontend_config"])
            self.classifier = programs[CLASSIFIER]

    def forward_spectrogram(self, frames: torch.Tensor) -> torch.Tensor:
        return self.classifier(frames)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 2 or wave.shape[1] != self.clip_samples:
            raise ValueError(f"expected windows [batch, {self.clip_samples}] (the clip length at "
                             f"{self.sample_rate} Hz), got {tuple(wave.shape)}")
        wave = wave.to(torch.float32)
        if hasattr(self, "program"):
            return self.program(wave)
        return self.classifier(self.frontend(wave))


def as_waveforms(model_input) -> list[np.ndarray]:
    """The accepted input forms (see the module docstring) as a list of 1-D float32 arrays."""
    if isinstance(model_input, pd.DataFrame):
        if WAVE_COLUMN not in model_input.columns:
            raise ValueError(f"expected a DataFrame with a column {WAVE_COLUMN!r} (one waveform per row), got "
                             f"columns {list(model_input.columns)}")
        items = list(model_input[WAVE_COLUMN])
    elif isinstance(model_input, dict) and WAVE_COLUMN in model_input:
        items = list(model_input[WAVE_COLUMN])
    elif isinstance(model_input, np.ndarray) and model_input.ndim == 1:
        items = [model_input]
    elif isinstance(model_input, np.ndarray | list | tuple):
        items = list(model_input)
    else:
        raise TypeError(f"expected a DataFrame with a {WAVE_COLUMN!r} column, a list of 1-D arrays or a 2-D "
                        f"array of waveforms, got {type(model_input).__name__}")
    waves = []
    for i, item in enumerate(items):
        wave = np.asarray(item, dtype=np.float32)
        if wave.ndim != 1:
            raise ValueError(f"waveform {i}: expected mono audio (a 1-D array of samples), got shape "
                             f"{wave.shape}; mix channels down first")
        if not np.isfinite(wave).all():
            raise ValueError(f"waveform {i}: holds NaN or infinite samples")
        waves.append(wave)
    return waves


class WaveformClassifier(mlflow.pyfunc.PythonModel):
    """`net` maps windows [B, clip samples] to logits [B, classes]; `config` holds sample_rate, clip_samples,
    threshold and classes (the model's `config` artifact)."""

    def __init__(self, net: torch.nn.Module | None = None, config: dict | None = None) -> None:
        self.net, self.config = net, config

    def load_context(self, context) -> None:
        programs = {name: torch.export.load(path).module() for name, path in context.artifacts.items()
                    if name in (FRONTEND, CLASSIFIER, FORWARD)}
        with open(context.artifacts[CONFIG], encoding="utf-8") as f:
            self.config = json.load(f)
        self.net = ExportedClassifier(self.config, programs)

    def probabilities(self, wave: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Mean window probability per class of one waveform (float64 [classes])."""
        chunks = windows(wave, int(self.config["clip_samples"]))
        total = np.zeros(len(self.config["classes"]), dtype=np.float64)
        for i in range(0, len(chunks), batch_size):
            with torch.no_grad():
                logits = self.net(torch.from_numpy(np.ascontiguousarray(chunks[i : i + batch_size])))
            if logits.ndim != 2 or logits.shape[1] != len(self.config["classes"]):
                raise ValueError(f"the model returned logits of shape {tuple(logits.shape)}, expected "
                                 f"[windows, {len(self.config['classes'])}] for its classes")
            total += torch.sigmoid(logits.float()).numpy().astype(np.float64).sum(axis=0)
        return total / len(chunks)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        params = params or {}
        output = params.get("output") or OUTPUTS[0]
        threshold = float(params.get("threshold", self.config["threshold"]))
        batch_size = int(params.get("batch_size") or DEFAULT_BATCH)
        if output not in OUTPUTS:
            raise ValueError(f"params output={output!r}: expected one of {list(OUTPUTS)}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"params threshold={threshold}: expected a probability in [0, 1]")
        if batch_size < 1:
            raise ValueError(f"params batch_size={batch_size}: expected at least 1")
        classes = list(self.config["classes"])
        waves = as_waveforms(model_input)
        probs = np.stack([self.probabilities(w, batch_size) for w in waves]) if waves else np.zeros((0, len(classes)))
        frame = pd.DataFrame(probs, columns=classes)
        return frame >= threshold if output == "positive" else frame


mlflow.models.set_model(WaveformClassifier())
