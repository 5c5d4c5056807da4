"""Real data the CI image installs (.ci/run): used where present, skipped elsewhere, never silently lost in CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

IN_CI = bool(os.environ.get("CI"))
REPO = Path(__file__).resolve().parents[1]


def skip_or_fail(reason: str) -> None:
    """Data the CI image is expected to have must not silently go missing there."""
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


def shared_data_dir() -> Path | None:
    """The folder holding cifar10-jpeg.tar.xz: $DEPTHBENCH_SHARED_DATA, else ../shared/data beside the checkout."""
    for candidate in (os.environ.get("DEPTHBENCH_SHARED_DATA"), REPO.parent / "shared/data"):
        if candidate and (Path(candidate) / "cifar10-jpeg.tar.xz").is_file():
            return Path(candidate)
    return None
