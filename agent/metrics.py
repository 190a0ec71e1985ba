"""Resource figures for heartbeats, read with psutil (cheap calls only: no sampling sleeps)."""

import os

import psutil

from protocol.frames import Metrics


def read_metrics(disk_path: str) -> Metrics:
    memory = psutil.virtual_memory()
    try:
        disk_free = psutil.disk_usage(disk_path).free
    except OSError:
        disk_free = 0
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = 0.0
    # interval=None: CPU use since the previous call, without blocking the event loop.
    return Metrics(cpu_percent=psutil.cpu_percent(interval=None), memory_used=memory.used,
                   memory_total=memory.total, disk_free=disk_free, load1=load1)
