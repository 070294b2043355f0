#!/usr/bin/env python3
"""Issue 13's sweep benchmark: one `layerflow run` of a sweep file, timed
from outside, with the GPU's utilisation sampled while it runs and the jobs'
phase times read back from its SQLite store.

  python3 bench/sweep_bench.py --layerflow build-gpu/client/layerflow \
      --sweep bench/sweeps/sweep_gpu_24.yaml --out OUT/sweep_gpu.json [--gpu 1]

Writes (and prints) wall time; the sum over jobs of their compute seconds
(forwards + analysis, the worker's "compute" phase) and of every phase;
the median of each phase per job; time from the start to the first
committed chunk (the first result row); and, with --gpu 1, the GPU-busy
fraction (mean of nvidia-smi's utilization.gpu, sampled every 100 ms) over
the whole run and over the window from the first job's lease (its first
commit less its own phase seconds) to the last commit. Targets (issue 13):
busy >= 80% of that window, wall <= 1.5 x (compute sum) + 5 s, first row
<= 5 s.
"""
import argparse, datetime, json, os, sqlite3, statistics, struct, subprocess, sys, tempfile, threading, time


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]; i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def fields(buf):
    """(field number, wire type, value) of a protobuf message's fields."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = varint(buf, i)
        elif wire == 1:
            v = buf[i:i + 8]; i += 8
        elif wire == 2:
            n, i = varint(buf, i); v = buf[i:i + n]; i += n
        elif wire == 5:
            v = buf[i:i + 4]; i += 4
        else:
            raise ValueError(f"wire type {wire}")
        yield num, wire, v


def phase_totals(blob):
    """layerflow.v1.Job's phase_totals (field 13, PhaseTime {1 phase, 2
    seconds, 3 count}) from the store's jobs.phase_totals blob. Decoded by
    hand rather than with the Python client's generated classes: the GPU
    machines have no package registry, so no protobuf runtime to import."""
    out = {}
    for num, wire, v in fields(blob or b""):
        if num != 13 or wire != 2:
            continue
        phase, seconds = "", 0.0
        for n2, w2, v2 in fields(v):
            if n2 == 1: phase = v2.decode()
            elif n2 == 2: seconds = struct.unpack("<d", v2)[0]
        out[phase] = out.get(phase, 0.0) + seconds
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layerflow", required=True)
    ap.add_argument("--sweep", default="")  # empty: the built-in default sweep
    ap.add_argument("--out", required=True)
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--commit", default=os.environ.get("LF_COMMIT", "unknown"))
    args = ap.parse_args()
    db = os.path.join(tempfile.mkdtemp(prefix="lf-sweep-bench-"), "store.db")
    samples, stop = [], threading.Event()

    def sample():
        proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu",
                                 "--format=csv,noheader,nounits", "-lms", "100"],
                                stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            if stop.is_set():
                break
            try:
                samples.append((time.time(), float(line.split(",")[0])))
            except ValueError:
                pass
        proc.terminate()

    sampler = threading.Thread(target=sample, daemon=True)
    if args.gpu:
        sampler.start()
        time.sleep(0.5)
    cmd = [args.layerflow, "run"] + ([args.sweep] if args.sweep else []) + [
        "--db", db, "--no-figures", "--format", "csv"]
    t0 = time.time()
    run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t1 = time.time()
    stop.set()
    if run.returncode != 0:
        sys.stderr.write(run.stderr[-4000:])
        sys.exit(f"layerflow run failed: rc {run.returncode}")
    con = sqlite3.connect(db)
    jobs = con.execute("SELECT job_id, state, phase_totals FROM jobs").fetchall()
    commits = [r[0] / 1e3 for r in con.execute("SELECT committed_ms FROM chunks ORDER BY committed_ms")]
    per_job = {j: phase_totals(blob) for j, _, blob in jobs}
    phases = sorted({p for t in per_job.values() for p in t})
    sums = {p: sum(t.get(p, 0.0) for t in per_job.values()) for p in phases}
    medians = {p: statistics.median(t.get(p, 0.0) for t in per_job.values()) for p in phases}
    first_job = con.execute("SELECT job_id FROM chunks ORDER BY committed_ms LIMIT 1").fetchone()[0]
    window_start = commits[0] - sum(per_job[first_job].values())
    result = {
        "benchmark": "sweep_gpu" if args.gpu else "sweep_cpu",
        "command": " ".join(["python3", "bench/sweep_bench.py"] + sys.argv[1:]),
        "sweep": args.sweep or "(the built-in default sweep)",
        "date": datetime.date.today().isoformat(), "commit": args.commit,
        "jobs": len(jobs), "succeeded": sum(1 for _, s, _ in jobs if s == 3),
        "wall_s": t1 - t0, "phase_sums_s": sums, "phase_medians_s": medians,
        "compute_sum_s": sums.get("compute", 0.0),
        "first_row_s": commits[0] - t0, "last_commit_s": commits[-1] - t0,
    }
    result["wall_over_compute_plus_5s"] = result["wall_s"] / (result["compute_sum_s"] + 5.0)
    if args.gpu:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             stdout=subprocess.PIPE, text=True).stdout.strip()
        result["gpu"] = gpu
        run_samples = [u for t, u in samples if t0 <= t <= t1]
        window = [u for t, u in samples if window_start <= t <= commits[-1]]
        result["gpu_busy_run"] = statistics.mean(run_samples) / 100 if run_samples else None
        result["gpu_busy_window"] = statistics.mean(window) / 100 if window else None
        result["window_s"] = commits[-1] - window_start
        result["samples"] = len(run_samples)
    json.dump(result, open(args.out, "w"), indent=2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
