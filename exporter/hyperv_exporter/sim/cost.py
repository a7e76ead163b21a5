"""What a probe costs a simulated Hyper-V host: new PowerShell processes, their start-up, host CPU.

On a real host every WinRS command starts ``powershell.exe``, which loads the .NET runtime and the
PowerShell engine before the script's first line runs, and whose first Hyper-V cmdlet (``Get-VM``)
then imports the Hyper-V module; a PSRP runspace pool lives in one ``wsmprovhost.exe`` that pays
the same once and stays up between pipelines (``/work/shared/reference/real-windows-behaviour.md``,
"What a new process costs"). The simulator charges that time (the answer is later, and the host's
first clock reading is taken after the start-up, as on Windows) and counts it per host, so the
tests, the demo and the benchmarks show what each probe costs a host.

Where :data:`WINDOWS` comes from (orders of magnitude, not a measurement of ours; nothing here ran
on Windows):

- **Start-up, 0.6 s.** Windows PowerShell 5.1 took about 600 ms to start on a Windows 10 machine
  (a PowerShell maintainer's measurement, and a user's ~600 ms rising to ~1 s after an update, in
  PowerShell/PowerShell#4239); a warm benchmark of ``powershell.exe`` in PowerShell/PowerShell#8341
  gives 330 ms. WinRS starts it with ``-NoProfile``, so no profile time is added.
- **Hyper-V module import, 1.0 s.** PowerShell imports the module on the first cmdlet from it
  (module auto-loading); duplicati/duplicati#7126 lost CI runs to that import inside a 30 s
  budget, and Zabbix-HyperV-Templates #40 reports 100% CPU for 5-10 s on every 30 s poll of a
  Hyper-V host whose template starts PowerShell per poll. One second is a modest middle for a
  server: together with the start-up it is the 1-2 s per new process the project's issue names.

The model is zero by default (:data:`NO_COST`): the test suite runs the simulator in-process and
must not wait seconds per probe. ``hyperv-sim`` and ``hyperv-exporter --demo`` use
:data:`WINDOWS`; a fleet file sets it per host (``Simulator: {ProcessStartSeconds,
ModuleImportSeconds}``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

#: The process WinRS starts for each command (through ``cmd /c``; cmd.exe itself costs
#: milliseconds and is not counted).
POWERSHELL = "powershell.exe"
#: The process that hosts a PSRP runspace pool (one per pool, alive until the pool closes).
WSMPROVHOST = "wsmprovhost.exe"
IMAGES = (POWERSHELL, WSMPROVHOST)


@dataclass(frozen=True)
class ProcessCost:
    """Seconds a new PowerShell host process spends before the collection can answer."""

    start_seconds: float = 0.0  # process start to the script's first line (.NET runtime, PowerShell engine)
    import_seconds: float = 0.0  # Import-Module Hyper-V, on the first Hyper-V cmdlet the process runs

    def __post_init__(self) -> None:
        if self.start_seconds < 0 or self.import_seconds < 0:
            raise ValueError("process cost seconds must not be negative")

    @property
    def total(self) -> float:
        return self.start_seconds + self.import_seconds


NO_COST = ProcessCost()
WINDOWS = ProcessCost(start_seconds=0.6, import_seconds=1.0)
#: ``--process-cost`` names.
MODELS = {"windows": WINDOWS, "none": NO_COST}


@dataclass(frozen=True)
class CostSnapshot:
    processes: dict[str, int]  # image -> processes started
    cpu_seconds: float  # modelled host CPU time


class HostCounters:
    """One host's process and CPU counters, shared by its WinRS and PSRP paths (thread-safe).

    CPU is modelled, not measured: a new process's start-up and module import are CPU-bound on one
    core (Zabbix #40 sees them as CPU spikes), and so is the script's own run time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processes = dict.fromkeys(IMAGES, 0)
        self._cpu = 0.0

    def start_process(self, image: str, cost: ProcessCost) -> ProcessCost:
        """Count a new ``image`` process and its start-up CPU; returns ``cost`` for the caller to wait.
        The module import is charged where it happens (:meth:`module_imported`): a command refused
        before its first Hyper-V cmdlet never imports the module."""
        with self._lock:
            self._processes[image] = self._processes.get(image, 0) + 1
            self._cpu += cost.start_seconds
        return cost

    def module_imported(self, cost: ProcessCost) -> None:
        """A process loaded the Hyper-V module, at ``cost``'s import CPU (NO_COST: it had it loaded)."""
        with self._lock:
            self._cpu += cost.import_seconds

    def script_ran(self, seconds: float) -> None:
        """The collection ran for ``seconds`` of host CPU (in a new or an already running process)."""
        with self._lock:
            self._cpu += max(seconds, 0.0)

    def snapshot(self) -> CostSnapshot:
        with self._lock:
            return CostSnapshot(dict(self._processes), self._cpu)

    def reset(self) -> None:
        with self._lock:
            self._processes = dict.fromkeys(IMAGES, 0)
            self._cpu = 0.0
