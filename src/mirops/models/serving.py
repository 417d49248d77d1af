"""How a trained model is fed and read when it serves: declared once, stored with the model.

A served model takes mono audio at `sample_rate` and answers one logit per class of `classes`; long audio is
cut into `clip_seconds` windows (what it trained on) whose probabilities are averaged, and a class is
positive at probability >= `threshold`. Training writes this spec into the logged model's metadata
(`mirops.registry.models.log_model`), and everything that serves the model (`mirops predict`, evaluation,
the monitor's class scores) reads it back from there, so nothing is patched onto the module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ServingSpec:
    sample_rate: int
    clip_seconds: float
    threshold: float
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"serving spec: sample_rate {self.sample_rate}: expected a positive rate in Hz")
        if self.clip_seconds <= 0:
            raise ValueError(f"serving spec: clip_seconds {self.clip_seconds}: expected > 0")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"serving spec: threshold {self.threshold}: expected a probability in [0, 1]")
        if not self.classes:
            raise ValueError("serving spec: no classes")

    @property
    def window_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    def with_threshold(self, threshold: float | None) -> ServingSpec:
        """The same spec with another decision threshold (`mirops predict --threshold`); None keeps it."""
        if threshold is None:
            return self
        return ServingSpec(self.sample_rate, self.clip_seconds, float(threshold), self.classes)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"classes": list(self.classes)}

    @classmethod
    def from_json(cls, payload: dict[str, Any], where: str = "serving spec") -> ServingSpec:
        expected = {"sample_rate", "clip_seconds", "threshold", "classes"}
        missing, unknown = expected - set(payload), set(payload) - expected
        if missing or unknown:
            raise ValueError(f"{where}: expected the keys {sorted(expected)}; missing {sorted(missing)}, "
                             f"unknown {sorted(unknown)}")
        return cls(int(payload["sample_rate"]), float(payload["clip_seconds"]), float(payload["threshold"]),
                   tuple(str(c) for c in payload["classes"]))
