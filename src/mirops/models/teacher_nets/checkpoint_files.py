"""Reading a teacher's official checkpoint file, with errors that say which file and what was expected.

One place for what every loader in this package does: refuse a missing file with the URL it comes from, read a
torch file without executing pickled code (`weights_only`), and check a state dict's keys and shapes strictly,
listing the first few problems.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn


def few(items: list[str], limit: int = 5) -> str:
    """The first `limit` items, and how many more."""
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def require_file(path: Path, what: str, file_name: str, url: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what} there; download {file_name} from {url}")


def read_torch(path: Path, what: str, file_name: str, url: str, safe_globals: Iterable[Any] = ()) -> Any:
    """`torch.load(path, weights_only=True)` of an official file; unreadable files are errors naming it."""
    require_file(path, what, file_name, url)
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: cannot be read as the {what} file {file_name} ({url}): {error}") from error


def load_strict(net: nn.Module, path: Path, state: Any, what: str, hints: Mapping[str, str] | None = None
                ) -> nn.Module:
    """Load `state` into `net` after checking every key and shape, then freeze it (eval, no gradients).

    `hints`: {key prefix: advice} for a common wrong file (a DataParallel or wrapper state dict)."""
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected the {what} state dict (a mapping of tensors), got {type(state).__name__}")
    expected = net.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [str(key) for key in state if key not in expected]
    wrong = [f"{key} {tuple(state[key].shape)} (expected {tuple(value.shape)})" for key, value in expected.items()
             if key in state and tuple(getattr(state[key], "shape", ())) != tuple(value.shape)]
    problems = [f"{label}: {few(items)}" for label, items in
                (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)) if items]
    if problems:
        advice = [hint for prefix, hint in (hints or {}).items() if any(key.startswith(prefix) for key in unexpected)]
        raise ValueError(f"{path}: not the {what} state dict: " + "; ".join(problems)
                         + "".join(f" ({hint})" for hint in advice))
    net.load_state_dict(state, strict=True)
    net.requires_grad_(False)
    return net.eval()
