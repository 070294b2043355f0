#!/usr/bin/env python3
"""Per-kernel totals of an `ncu --csv --metrics gpu__time_duration.sum` log.

  python3 bench/ncu_summary.py LOG [--top 25]

Prints each kernel name (templates cut at 90 characters), its launches, its
total and mean time, and its share of the summed kernel time, largest first:
the sum is the device time of the profiled run, to set against its wall time
(what neither accounts for is host time between kernels).
"""
import argparse
import csv
import collections


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    rows = []
    with open(args.log, errors="replace") as f:
        lines = [l for l in f if l.startswith('"')]
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(row["Metric Value"].replace(",", ""))
        unit = row.get("Metric Unit", "ns")
        scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3,
                 "msecond": 1e3}.get(unit, 1e-3)
        rows.append((row["Kernel Name"], value * scale))
    total = collections.defaultdict(float)
    count = collections.Counter()
    for name, us in rows:
        total[name] += us
        count[name] += 1
    whole = sum(total.values())
    print(f"{len(rows)} kernels, {whole / 1e3:.1f} ms of kernel time")
    for name, us in sorted(total.items(), key=lambda kv: -kv[1])[: args.top]:
        short = name if len(name) <= 90 else name[:87] + "..."
        print(f"{us / 1e3:9.2f} ms {100 * us / whole:5.1f}% {count[name]:5d}x "
              f"{us / count[name]:8.1f} us  {short}")


if __name__ == "__main__":
    main()
