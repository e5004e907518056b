"""Shared helpers for the benchmarks: best-of-N timing and an environment header.

Benchmarks are plain scripts (not collected by pytest): ``python bench/<name>.py``.
The machines are shared and noisy, so every number is the best of several rounds and the
comparisons are ratios measured side by side in the same run.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import torch


def best_time(fn: Callable[[], object], *, rounds: int = 5, min_time: float = 0.2, sync: Callable[[], None] | None = None) -> float:
    """Best (minimum) wall time of one call of ``fn`` over ``rounds`` rounds, in seconds.

    Each round repeats ``fn`` until ``min_time`` has elapsed and reports the mean of that round.
    """
    sync = sync or (lambda: None)
    fn()
    sync()
    best = float("inf")
    for _ in range(rounds):
        n = 0
        t0 = time.perf_counter()
        while True:
            fn()
            n += 1
            sync()
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time:
                break
        best = min(best, elapsed / n)
    return best


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def header(device: torch.device) -> str:
    lines = [
        f"date: {time.strftime('%Y-%m-%d %H:%M')}",
        f"machine: {os.cpu_count()} CPU cores ({cpu_model()}), torch threads {torch.get_num_threads()}",
        f"torch {torch.__version__}, python {platform.python_version()}",
        f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
    ]
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, object]]) -> str:
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(out)
