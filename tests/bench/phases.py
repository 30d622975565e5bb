#!/usr/bin/env python3
"""The phase table of bench.sh section 6, from SANDBOX_RUNC_TRACE lines.

Trace lines: MONOTONIC_NS PID COMMAND ID PHASE US_SINCE_PREVIOUS (src/SandboxRunc/Diagnostics/PhaseTrace.cs);
the phase name may contain spaces. Walls lines (from bench.sh): ID COMMAND MICROSECONDS, each command's
time as its caller saw it. For each command, a row per mark: its median offset from the command's Main, and
the median time since the previous mark of the same process (what that phase cost). The helpers started by
create (supervise, emulate) are placed on create's timeline up to create's end. "exec + runtime start +
exit" is the caller's wall time minus Main..done: what happens outside our code.

Usage: phases.py TRACE WALLS [SKIP_ID_SUFFIX]   (ids ending in -0 are warm-ups and skipped)
"""
import collections
import statistics
import sys


def parse(path):
    procs = {}
    for line in open(path):
        parts = line.split()
        if len(parts) < 6:
            continue
        ns, pid, command, cid, us = int(parts[0]), parts[1], parts[2], parts[3], int(parts[-1])
        phase = " ".join(parts[4:-1])
        p = procs.setdefault(pid, {"command": command, "id": "-", "marks": []})
        if cid != "-":
            p["id"] = cid
        p["marks"].append((ns, phase, us))
    return procs


def main():
    trace, walls_path = sys.argv[1], sys.argv[2]
    procs = parse(trace)
    walls = collections.defaultdict(list)
    for line in open(walls_path):
        cid, command, us = line.split()
        walls[command].append(int(us))
    by_id = collections.defaultdict(list)
    for p in procs.values():
        if p["id"] != "-" and not p["id"].endswith("-0"):
            by_id[p["id"]].append(p)

    for command, helpers in (("create", ("supervise", "emulate")), ("start", ()), ("delete", ())):
        rows = collections.defaultdict(lambda: ([], []))  # (who, phase) -> (offsets, costs)
        spans = []
        for ps in by_id.values():
            main_proc = next((p for p in ps if p["command"] == command), None)
            if main_proc is None:
                continue
            base = main_proc["marks"][0][0]
            end = main_proc["marks"][-1][0]
            spans.append((end - base) / 1e6)
            for p in [main_proc] + [p for p in ps if p["command"] in helpers]:
                for ns, phase, us in p["marks"]:
                    if ns > end:
                        continue
                    who = "" if p is main_proc else p["command"] + ": "
                    offsets, costs = rows[(who, phase)]
                    offsets.append((ns - base) / 1e6)
                    costs.append(us / 1000)
        if not spans:
            continue
        span = statistics.median(spans)
        wall = statistics.median(walls[command]) / 1000 if walls[command] else None
        print(f"  {command}: median over {len(spans)} runs (ms); 'at' = since {command}'s Main, 'took' = since the previous mark of that process")
        table = sorted(((statistics.median(o), statistics.median(c), who + phase, len(o)) for (who, phase), (o, c) in rows.items()))
        w = max(len(r[2]) for r in table)
        print(f"    {'phase'.ljust(w)}  {'at':>7}  {'took':>7}")
        for at, took, name, count in table:
            print(f"    {name.ljust(w)}  {at:7.2f}  {took:7.2f}")
        if wall is not None:
            print(f"    {'Main .. done'.ljust(w)}  {'':>7}  {span:7.2f}")
            print(f"    {'exec + runtime start + exit (wall - Main..done)'.ljust(w)}  {'':>7}  {wall - span:7.2f}")
            print(f"    {'wall (as the caller saw it)'.ljust(w)}  {'':>7}  {wall:7.2f}")
        print()


if __name__ == "__main__":
    main()
