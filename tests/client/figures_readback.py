#!/usr/bin/env python3
"""Reads `layerflow plot` / `layerflow run --figures` sidecars back and checks
every drawn number against the stored result rows (the CSV of the same sweep).

    figures_readback.py RESULTS.csv FIGURES_DIR

The expected values are recomputed here, independently of the C++ code, in
float64: jobs that differ only in their seed are pooled as one set of prompts
(mean weighted by count; variance = the counts' weighted mean of std^2 plus the
spread of the job means). Exit 1 listing every mismatch, 0 when all agree.
"""
import csv
import glob
import json
import math
import os
import sys
from collections import defaultdict


def pool(rows):
    rows = [r for r in rows if r["count"] > 0]
    n = sum(r["count"] for r in rows)
    mean = sum(r["count"] * r["value"] for r in rows) / n
    var = sum(r["count"] * (r["std"] ** 2 + (r["value"] - mean) ** 2) for r in rows) / n
    return mean, math.sqrt(max(var, 0.0))


def close(a, b):
    return abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))


def main():
    rows_path, figures_dir = sys.argv[1], sys.argv[2]
    # (model, init, dataset, context, metric, layer, layer_b, head, position) -> rows
    stored = defaultdict(list)
    with open(rows_path, newline="") as f:
        for r in csv.DictReader(f):
            if "(" in r["metric"]:
                continue
            key = (r["model"], r["init_scheme"], r["dataset"], r["context_length"], r["metric"],
                   int(r["layer"]), r["layer_b"], r["head"], r["position"])
            stored[key].append({"value": float(r["value"]), "std": float(r["std"]),
                                "count": int(r["count"])})
    errors = []
    checked = 0
    sidecars = sorted(glob.glob(os.path.join(figures_dir, "*.json")))
    if not sidecars:
        errors.append("no sidecars in " + figures_dir)

    def config(meta):
        return (meta["model"], meta["init_scheme"], meta["dataset"], meta["context_length"])

    for path in sidecars:
        name = os.path.basename(path)
        with open(path) as f:
            fig = json.load(f)
        for ext in ("png", "svg"):
            image = path[:-len("json")] + ext
            if os.path.exists(image) and os.path.getsize(image) < 1000:
                errors.append(f"{image}: only {os.path.getsize(image)} bytes")
        if fig["kind"] == "line":
            metric = fig["meta"]["metric"]
            for line in fig["lines"]:
                c = config(line["meta"])
                depth = int(line["meta"]["depth_points"])
                ids = line["ids"]
                expected_ids = sorted({k[5] for k in stored
                                       if k[:4] == c and k[4] == metric and k[6:] == ("", "", "")})
                if ids != expected_ids:
                    errors.append(f"{name} {c[0]}: layers {ids}, stored {expected_ids}")
                for i, layer in enumerate(ids):
                    mean, std = pool(stored[c + (metric, layer, "", "", "")])
                    if not close(line["y"][i], mean) or not close(line["std"][i], std):
                        errors.append(f"{name} {c[0]} layer {layer}: drew {line['y'][i]} ± "
                                      f"{line['std'][i]}, stored {mean} ± {std}")
                    if not close(line["x"][i], layer / depth):
                        errors.append(f"{name} {c[0]} layer {layer}: x {line['x'][i]}")
                    checked += 1
            if metric == "probe_test_acc":
                chances = sorted({r["value"] for k, rs in stored.items() if k[4] == "probe_chance"
                                  for r in rs})
                drawn = sorted(ref["y"] for ref in fig["references"])
                if len(drawn) != len(chances) or not all(map(close, drawn, chances)):
                    errors.append(f"{name}: chance lines {drawn}, stored {chances}")
                checked += len(drawn)
        elif fig["kind"] == "heatmap":
            c = config(fig["meta"])
            metric = fig["meta"]["metric"]
            cols = fig["cols"]
            # A layer x layer map (rows with layer_b: all-pair and example-view
            # CKA) or a layer x token map (rows with a position).
            pair = any(k[:5] == c + (metric,) and k[6] != "" for k in stored)
            for r, layer in enumerate(fig["row_ids"]):
                for k, col in enumerate(fig["col_ids"]):
                    drawn = fig["values"][r * cols + k]
                    if pair:
                        a, b = min(layer, col), max(layer, col)
                        key = c + (metric, a, str(b), "", "")
                        want = 1.0 if a == b else (pool(stored[key])[0] if key in stored else None)
                    else:
                        key = c + (metric, layer, "", "", str(col))
                        want = pool(stored[key])[0] if key in stored else None
                    if want is None:
                        if drawn is not None:
                            errors.append(f"{name} ({layer}, {col}): drew {drawn}, nothing stored")
                    elif drawn is None or not close(drawn, want):
                        errors.append(f"{name} ({layer}, {col}): drew {drawn}, stored {want}")
                    checked += 1
        elif fig["kind"] == "stacked_bars":
            c = config(fig["meta"])
            flavour = fig["meta"]["metric"]
            for i, category in enumerate(fig["categories"]):
                layer = int(category)
                for b, stack in enumerate(fig["stacks"]):
                    metric = f"{flavour}_frac_{b}"
                    heads = [pool(rs)[0] for k, rs in stored.items()
                             if k[:5] == c + (metric,) and k[5] == layer and k[7] != ""]
                    want = max(0.0, sum(heads) / len(heads)) if heads else 0.0
                    if not close(stack["values"][i], want):
                        errors.append(f"{name} layer {layer} bin {b}: drew {stack['values'][i]}, "
                                      f"stored mean over {len(heads)} heads {want}")
                    checked += 1
        else:
            errors.append(f"{name}: unknown kind {fig['kind']}")
    for e in errors:
        print("MISMATCH", e)
    print(f"{len(sidecars)} figures, {checked} values checked, {len(errors)} mismatches")
    return 1 if errors or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
