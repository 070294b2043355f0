#!/usr/bin/env python3
"""Per-kernel totals of an `ncu --csv --metrics gpu__time_duration.sum` log.

  python3 bench/ncu_summary.py LOG [--top 25] [--minus BASE_LOG]

Prints each kernel name (templates cut at 90 characters), its launches, its
total and mean time, and its share of the summed kernel time, largest first:
the sum is the device time of the profiled run, to set against its wall time
(what neither accounts for is host time between kernels). With --minus, each
kernel's totals less those of BASE_LOG (e.g. a forward with metrics less the
forward alone: what the metrics cost, kernel by kernel).
"""
import argparse
import csv
import collections


def read(path):
    rows = []
    with open(path, errors="replace") as f:
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
    return total, count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--minus", default=None)
    args = ap.parse_args()
    total, count = read(args.log)
    if args.minus:
        base_total, base_count = read(args.minus)
        for name in set(total) | set(base_total):
            total[name] -= base_total.get(name, 0.0)
            count[name] -= base_count.get(name, 0)
        total = {k: v for k, v in total.items() if count[k] != 0 or abs(v) > 1.0}
        count = {k: (c if c != 0 else 1) for k, c in count.items() if k in total}
    whole = sum(total.values())
    print(f"{sum(count.values())} kernels, {whole / 1e3:.1f} ms of kernel time"
          + (f" (less {args.minus})" if args.minus else ""))
    for name, us in sorted(total.items(), key=lambda kv: -abs(kv[1]))[: args.top]:
        short = name if len(name) <= 90 else name[:87] + "..."
        print(f"{us / 1e3:9.2f} ms {100 * us / whole:5.1f}% {count[name]:5d}x "
              f"{us / count[name]:8.1f} us  {short}")


if __name__ == "__main__":
    main()
