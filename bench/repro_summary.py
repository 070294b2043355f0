#!/usr/bin/env python3
"""The figures docs/reproductions.md (b), (c) and (f) quote, from the stores
of TRAIN sweeps with analyses (bench/gpu.sh mqar with LF_MQAR_KEEP=db):

  python3 bench/repro_summary.py STORE.db... [--json OUT.json]

Per store: each TRAIN job's last held-out accuracy, its stopping step and
its last train_penalty; each EXTRACT job on its init or trained model (the
model "artifact:<train job>/init_model" or ".../model"): intertoken_cos and
adjacent_cos per point, and per block the fraction of |lambda| in [0.9, 1)
(spectrum_frac_3) and the mean log|lambda|, each the mean over prompts
(sum / count over chunks), spectra then averaged over heads."""
import argparse
import json
import os
import sqlite3
from collections import defaultdict


def per_layer(db, job, metric, by_head=False):
    rows = db.execute(
        "SELECT layer, head, SUM(sum), SUM(count) FROM chunk_stats WHERE job_id = ? AND "
        "metric = ? AND layer_b = -1 AND position = -1 GROUP BY layer, head", (job, metric))
    heads = defaultdict(list)
    for layer, head, s, n in rows:
        if n and (by_head or head == -1):
            heads[layer].append(s / n)
    return {layer: sum(v) / len(v) for layer, v in sorted(heads.items())}


def summarise(path):
    db = sqlite3.connect(path)
    out = {"store": os.path.basename(path), "train": [], "analysis": []}
    arch = dict(db.execute("SELECT job_id, model FROM jobs"))
    for job, model in db.execute("SELECT job_id, model FROM jobs ORDER BY seq"):
        if model.startswith("artifact:"):
            which = "init" if model.endswith("/init_model") else "trained"
            trained_by = model[len("artifact:"):].split("/")[0]
            out["analysis"].append({
                "job": job, "model": f"{arch.get(trained_by, '?')} {which}",
                "intertoken_cos": per_layer(db, job, "intertoken_cos"),
                "adjacent_cos": per_layer(db, job, "adjacent_cos"),
                "frac_0.9_1": per_layer(db, job, "spectrum_frac_3", by_head=True),
                "mean_log": per_layer(db, job, "spectrum_mean_log", by_head=True)})
            continue
        curve = db.execute(
            "SELECT position, SUM(sum) / SUM(count) FROM chunk_stats WHERE job_id = ? AND "
            "metric = 'eval_acc' GROUP BY position ORDER BY position", (job,)).fetchall()
        stop = db.execute("SELECT sum / count FROM chunk_stats WHERE job_id = ? AND "
                          "metric = 'train_stopped'", (job,)).fetchone()
        pen = db.execute("SELECT sum / count FROM chunk_stats WHERE job_id = ? AND metric = "
                         "'train_penalty' ORDER BY position DESC LIMIT 1", (job,)).fetchone()
        out["train"].append({
            "job": job, "model": model,
            "last_step": curve[-1][0] if curve else None,
            "eval_acc": curve[-1][1] if curve else None,
            "stopped_at": stop[0] if stop else None,
            "train_penalty": pen[0] if pen else None,
            "curve": curve[::4] + curve[-1:]})
    return out


def fmt(d):
    return " ".join(f"{k}:{v:.3f}" for k, v in d.items())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stores", nargs="+")
    ap.add_argument("--json")
    args = ap.parse_args()
    result = [summarise(p) for p in args.stores]
    for r in result:
        print(f"== {r['store']}")
        for t in r["train"]:
            pen = "" if t["train_penalty"] is None else f" penalty {t['train_penalty']:.4f}"
            print(f"  TRAIN {t['model']}: eval_acc {t['eval_acc']} at step {t['last_step']}"
                  f" stopped {t['stopped_at']}{pen}")
        for a in r["analysis"]:
            print(f"  {a['model']:16s} intertoken_cos {fmt(a['intertoken_cos'])}")
            print(f"  {a['model']:16s} adjacent_cos   {fmt(a['adjacent_cos'])}")
            print(f"  {a['model']:16s} frac[0.9,1)    {fmt(a['frac_0.9_1'])}")
            print(f"  {a['model']:16s} mean log|l|    {fmt(a['mean_log'])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
