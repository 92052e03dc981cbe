"""Resident memory of this process from /proc (Linux): a field of /proc/self/status, and a
reset of the high-water mark so the next peak is measured from now (memory.py, step_time.py)."""

from __future__ import annotations


def vm_kb(field: str) -> int:
    """`field` of /proc/self/status (VmRSS, VmHWM, …) in kB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> int:
    """VmHWM (the peak) := the current RSS; returns that RSS in kB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return vm_kb("VmRSS")
