"""A generated fleet served over WS-Management in a process of its own (so its CPU is not the exporter's).

    python -m benchmarks.simserver --hosts 100 --vms 100 --seed 1 --latency 0.05 --password-env BENCH_PW

Prints one JSON line ``{"urls": {name: url}}`` when every listener is up, then serves until stdin
closes. Commands on stdin, one per line, each answered with one JSON line: ``stats NAME`` (the
endpoint's request counters), ``reset`` (zero every endpoint's counters), ``quit``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from hyperv_exporter.sim.generator import generate_fleet
from hyperv_exporter.sim.host import Simulator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, required=True)
    parser.add_argument("--vms", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every HTTP request")
    parser.add_argument("--run-seconds", type=float, default=0.05, help="simulated run time of the script")
    parser.add_argument("--password-env", required=True, help="environment variable holding the password")
    args = parser.parse_args()
    fleet = generate_fleet(
        args.hosts,
        args.vms,
        seed=args.seed,
        latency=args.latency,
        run_seconds=args.run_seconds,
        password=os.environ[args.password_env],
    )
    simulator = Simulator(fleet)
    simulator.start()
    try:
        print(json.dumps({"urls": simulator.urls()}), flush=True)
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "stats":
                answer: object = simulator.endpoint(argument).stats.snapshot()
            elif command == "reset":
                for endpoint in simulator.endpoints.values():
                    endpoint.stats.reset()
                answer = {"ok": True}
            elif command == "quit":
                break
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)
    finally:
        simulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
