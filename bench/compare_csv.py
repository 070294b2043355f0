"""Compares two `layerflow run --format csv` outputs of the same sweep run on
different devices: same rows (model, init, seed, metric, layer, layer_b, head, position), values within
a tolerance. Prints the largest differences and exits non-zero past it."""
import csv
import sys


def load(path):
    with open(path, newline="") as f:
        return {
            (r["model"], r["init_scheme"], r["seed"], r["metric"], r["layer"],
             r.get("layer_b", ""), r.get("head", ""), r.get("position", "")): r
            for r in csv.DictReader(f)
        }


def main(a_path, b_path, tol=1e-4):
    a, b = load(a_path), load(b_path)
    if a.keys() != b.keys():
        print(f"row sets differ: {len(a)} vs {len(b)} rows")
        return 1
    worst = sorted(
        ((abs(float(a[k]["value"]) - float(b[k]["value"])), k) for k in a), reverse=True
    )
    for diff, key in worst[:5]:
        print(f"max |diff| {diff:.3e} at {key}: {a[key]['value']} vs {b[key]['value']}")
    print(f"{len(a)} rows compared, tolerance {tol}")
    ok = worst[0][0] <= float(tol)
    print("1 passed, 0 failed" if ok else "0 passed, 1 failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
