"""Waiting for the operator to stop a network server (SIGTERM from a supervisor, SIGINT from Ctrl+C)."""

from __future__ import annotations

import signal

import anyio


async def wait_for_stop_signal() -> int:
    """Return the number of the first SIGTERM or SIGINT received. Safe to cancel."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            return int(signum)
    raise RuntimeError("signal receiver ended")  # pragma: no cover - the iterator never ends
