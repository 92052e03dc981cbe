"""Test-session settings shared by every area."""

from __future__ import annotations

import os

import torch


def pytest_configure(config) -> None:
    # Under pytest-xdist each worker gets one core's worth of threads, so `-n 2` on two cores
    # does not oversubscribe the CPU.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
