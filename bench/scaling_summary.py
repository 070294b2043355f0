#!/usr/bin/env python3
"""docs/reproductions.md (g): the responses of the scaling sweep
(examples/reproductions/scaling.yaml) from its store:

  python3 bench/scaling_summary.py STORE.db [--json OUT.json]

Per model: L (blocks), intertoken_cos at the last block (point L), the
onset layer of homogenisation (METHODS.md, "Beyond the papers": the first
point l in 1..L whose intertoken_cos exceeds half its value at the last
block; also as l / L), and the KVPR probe's best layer (chosen on
validation), its test accuracy, the final point's and the drop between them
(probe_* job rows, mean over the probe seeds)."""
import argparse
import json
import sqlite3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--json")
    args = ap.parse_args()
    db = sqlite3.connect(args.store)
    models = [m for (m,) in db.execute("SELECT DISTINCT model FROM jobs ORDER BY seq")]
    out = []
    for model in models:
        def rows(metric):
            return dict(db.execute(
                "SELECT s.layer, SUM(s.sum) / SUM(s.count) FROM chunk_stats s JOIN jobs j "
                "ON j.job_id = s.job_id WHERE j.model = ? AND s.metric = ? AND s.layer_b = -1 "
                "AND s.head = -1 AND s.position = -1 GROUP BY s.layer", (model, metric)))
        cos = rows("intertoken_cos")
        if not cos:
            continue
        blocks = max(cos) - 1  # points 0..L+1
        last = cos[blocks]
        onset = next((l for l in range(1, blocks + 1) if cos[l] > 0.5 * last), None)
        one = lambda m: rows(m).get(0)
        r = {"model": model, "blocks": blocks, "cos_last_block": last, "onset": onset,
             "onset_rel": onset / blocks if onset else None,
             "probe_best_layer": one("probe_best_layer"), "probe_best_acc": one("probe_best_acc"),
             "probe_final_acc": one("probe_final_acc"), "probe_drop": one("probe_drop"),
             "probe_chance": one("probe_chance")}
        out.append(r)
        f = lambda v, p=3: "-" if v is None else f"{v:.{p}f}"
        print(f"{model:28s} L={blocks:2d} cos_L={f(last)} onset={onset} ({f(r['onset_rel'], 2)})"
              f" best={f(r['probe_best_layer'], 0)}:{f(r['probe_best_acc'])}"
              f" final={f(r['probe_final_acc'])} drop={f(r['probe_drop'])}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
