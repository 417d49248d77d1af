"""One settings object for the whole pipeline: params.yaml, overridden by MIROPS_* environment variables.

Paths are resolved against the project root (the folder holding params.yaml), so the same code runs
from the repository, from a DVC stage or from a test's temporary project.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEMO_CLASSES = [
    "bass", "drums", "flute", "guitar", "organ", "piano", "saxophone", "synthesizer", "trumpet", "violin",
]


class DemoParams(BaseModel):
    clips: int = 150
    production_clips: int = 40
    clip_seconds: float = 10.0
    sample_rate: int = 16000
    groups: int = 30
    missing_fraction: float = Field(0.4, ge=0.0, lt=1.0)
    classes: list[str] = Field(default_factory=lambda: list(DEMO_CLASSES))
    max_instruments: int = Field(4, ge=1)
    soundfont: str = "FluidR3_GM.sf2"
    production_soundfont: str = "TimGM6mb.sf2"
    split: dict[str, float] = Field(default_factory=lambda: {"train": 0.6, "valid": 0.2, "test": 0.2})


class AuditParams(BaseModel):
    min_positives_per_class: int = 3
    max_group_splits: int = 1
    split_fraction_bounds: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {"train": (0.4, 0.85), "valid": (0.05, 0.35), "test": (0.05, 0.35)}
    )
    duration_bounds_s: tuple[float, float] = (1.0, 60.0)


class TrainParams(BaseModel):
    backbone: str = "yamnet"
    transform: str = "unet"
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = 3e-3
    weight_decay: float = 5e-7
    freq_mask: int = 8
    time_mask: int = 96
    threshold: float = 0.5
    clip_seconds: float = 10.0     # every clip is centre-cropped or zero-padded to this length
    final_relu: bool = False       # keep the reference U-Net's last ReLU (see models/transforms.py)
    calibrate: bool = True         # start the U-Net near the identity on the data's log-mel scale
    device: str = "auto"           # "auto": CUDA when there is a GPU, else CPU
    max_clips: int | None = None  # cap on training clips (tests, smoke runs)


class RegistryParams(BaseModel):
    model_name: str = "mirops-instruments"
    primary_metric: str = "test_mAP"


class MonitorParams(BaseModel):
    drift_share_threshold: float = Field(0.5, gt=0.0, le=1.0)


class Settings(BaseSettings):
    """Everything the pipeline needs to know; `Settings.load(root)` is the one way to build it."""

    model_config = SettingsConfigDict(env_prefix="MIROPS_", env_nested_delimiter="__", extra="ignore")

    root: Path = Path(".")
    seed: int = 2022
    demo: DemoParams = Field(default_factory=DemoParams)
    audit: AuditParams = Field(default_factory=AuditParams)
    train: TrainParams = Field(default_factory=TrainParams)
    registry: RegistryParams = Field(default_factory=RegistryParams)
    monitor: MonitorParams = Field(default_factory=MonitorParams)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (params.yaml content passed by `load`) < environment: env vars win over the file.
        return (env_settings, init_settings)

    @classmethod
    def load(cls, root: str | Path | None = None, **overrides: Any) -> Settings:
        root = Path(root or os.environ.get("MIROPS_ROOT", ".")).resolve()
        params_file = root / "params.yaml"
        values: dict[str, Any] = {}
        if params_file.exists():
            loaded = yaml.safe_load(params_file.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{params_file}: expected a mapping of sections, got {type(loaded).__name__}")
            values.update(loaded)
        for key, value in overrides.items():
            section, _, field = key.partition("__")
            if field:
                values.setdefault(section, {})[field] = value
            else:
                values[key] = value
        values["root"] = root
        return cls(**values)

    # Where things live, all under the project root.
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def production_dir(self) -> Path:
        return self.root / "production"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def dashboards_dir(self) -> Path:
        return self.root / "dashboards"

    @property
    def expectations_dir(self) -> Path:
        own = self.root / "expectations"
        return own if own.is_dir() else Path(__file__).resolve().parents[2] / "expectations"

    @property
    def tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.root / 'mlruns.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.root / "mlartifacts"
