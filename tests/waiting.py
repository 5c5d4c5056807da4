"""Waiting in tests: on the event itself, never on a deadline sized for an idle machine.

A wait polls for what it waits for (a record on disk, a job leaving the queue, a process ending); the only limit is
SAFETY_NET_S, which ends a test that has hung rather than one that is slow: the suite must pass with the machine
under load (two busy processes beside it on 2 cores, issue #20), where a 120 s deadline fired on a wait that
takes 20 s on an idle machine. DEPTHBENCH_TEST_SAFETY_NET_S changes it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

SAFETY_NET_S = float(os.environ.get("DEPTHBENCH_TEST_SAFETY_NET_S", "900"))


def wait_for(condition: Callable[[], T], what: str, poll_seconds: float = 0.1) -> T:
    """Poll `condition` until it returns something true, and return that."""
    started = time.monotonic()
    while not (value := condition()):
        if time.monotonic() - started > SAFETY_NET_S:
            raise AssertionError(f"still waiting for {what} after {SAFETY_NET_S:.0f} s: the test hangs (the safety "
                                 "net, DEPTHBENCH_TEST_SAFETY_NET_S, is not a deadline for a slow machine)")
        time.sleep(poll_seconds)
    return value
