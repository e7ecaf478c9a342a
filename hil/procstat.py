"""CPU seconds from ``/proc``: of a process tree, of one thread, of the whole machine.

The benches report what each part of a run cost the CPU, and what everything else on the
machine took meanwhile, so a figure taken beside other work says so.
"""

from __future__ import annotations

import os

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(path: str) -> list[str]:
    """The fields of a ``/proc/.../stat`` file after the command name (which may hold
    spaces and parentheses): ``[state, ppid, ...]``. Raises ``OSError`` when it is gone."""
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` and all their descendants alive now (children
    they already reaped count through their parent's ``cutime``/``cstime``)."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            rest = _stat_fields(f"/proc/{entry.name}/stat")
        except (OSError, IndexError):
            continue  # gone meanwhile
        pid = int(entry.name)
        parent[pid] = int(rest[1])
        ticks[pid] = sum(int(x) for x in rest[11:15])  # utime stime cutime cstime
    tree = set(p for p in pids if p in ticks)
    grew = True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in tree and pid not in tree}
        tree |= more
        grew = bool(more)
    return sum(ticks[p] for p in tree) / _CLK_TCK


def thread_cpu_seconds(native_id: int) -> float:
    """User + system CPU seconds of one thread of this process (``threading.Thread``'s
    ``native_id``); 0.0 when it has ended."""
    try:
        rest = _stat_fields(f"/proc/self/task/{native_id}/stat")
    except (OSError, IndexError):
        return 0.0
    return (int(rest[11]) + int(rest[12])) / _CLK_TCK


def machine_busy_s() -> float:
    """CPU seconds all cores of the machine have been busy since boot (``/proc/stat``:
    everything but idle and iowait): the difference over a run, less what the bench's own
    processes took, is what other processes took meanwhile."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / _CLK_TCK
