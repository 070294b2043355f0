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
commit less its own phase seconds) to the last commit, and the same from
the driver's timestamped samples (NVML, gpu_busy_window_nvml), which are
cut to the window where nvidia-smi's are smeared by up to a second of
averaging before each read. Targets (issue 13):
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


class NvmlSamples:
    """The driver's own GPU-utilisation samples (nvmlDeviceGetSamples, through
    ctypes: no Python package on the GPU machine), each the percent of its
    sampling interval in which a kernel ran, with its timestamp. Unlike
    nvidia-smi's utilization.gpu, read every 100 ms but averaged by the driver
    over up to a second before the read, these can be cut to the window
    exactly (to within one interval)."""

    def __init__(self):
        import ctypes
        self.ct = ctypes
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        if self.lib.nvmlInit_v2() != 0:
            raise OSError("nvmlInit failed")
        self.handle = ctypes.c_void_p()
        if self.lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(self.handle)) != 0:
            raise OSError("no GPU 0")

        class Sample(ctypes.Structure):  # nvmlSample_t: timestamp (us), 8-byte value union
            _fields_ = [("ts", ctypes.c_ulonglong), ("value", ctypes.c_ulonglong)]
        self.Sample = Sample
        self.samples = {}

    def poll(self):
        ct = self.ct
        vtype, count = ct.c_int(), ct.c_uint(0)
        # NVML_GPU_UTILIZATION_SAMPLES = 1; a first call with no buffer sizes it.
        if self.lib.nvmlDeviceGetSamples(self.handle, 1, ct.c_ulonglong(0), ct.byref(vtype),
                                         ct.byref(count), None) != 0 or count.value == 0:
            return
        buf = (self.Sample * count.value)()
        if self.lib.nvmlDeviceGetSamples(self.handle, 1, ct.c_ulonglong(0), ct.byref(vtype),
                                         ct.byref(count), buf) != 0:
            return
        for sample in buf[:count.value]:
            self.samples[sample.ts] = sample.value & 0xFFFFFFFF  # unsigned int

    def busy(self, start, end):
        """Fraction of [start, end] (seconds since the epoch) in which a
        kernel ran: each sample covers the interval since the one before."""
        points = sorted((ts / 1e6, v / 100.0) for ts, v in self.samples.items())
        covered = busy = 0.0
        for (t0, _), (t1, v) in zip(points, points[1:]):
            overlap = min(t1, end) - max(t0, start)
            if overlap > 0:
                covered += overlap
                busy += overlap * v
        if covered < 0.5 * (end - start):
            return None, points  # the driver's buffer did not reach the window
        return busy / covered, points


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
    nvml = None
    if args.gpu:
        try:
            nvml = NvmlSamples()
        except OSError as e:
            print(f"NVML samples unavailable ({e}); nvidia-smi only", file=sys.stderr)

        def poll_nvml():
            while not stop.is_set():
                nvml.poll()
                time.sleep(0.5)
        if nvml is not None:
            threading.Thread(target=poll_nvml, daemon=True).start()
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
        # The share of the window in the jobs' compute phases: what busy
        # would be if the device never waited inside them.
        result["compute_share_of_window"] = result["compute_sum_s"] / result["window_s"]
        if nvml is not None:
            nvml.poll()
            busy, points = nvml.busy(window_start, commits[-1])
            result["gpu_busy_window_nvml"] = busy
            result["nvml_samples_in_window"] = sum(
                1 for t, _ in points if window_start <= t <= commits[-1])
            if points:  # relative to the run's start: a check that the clocks agree
                result["nvml_span_from_start_s"] = [points[0][0] - t0, points[-1][0] - t0]
            if len(points) > 1:
                result["nvml_sample_interval_s"] = statistics.median(
                    b[0] - a[0] for a, b in zip(points, points[1:]))
        result["samples"] = len(run_samples)
    json.dump(result, open(args.out, "w"), indent=2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
