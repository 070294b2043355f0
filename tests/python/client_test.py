"""The Python client (client/python) against a real coordinator and worker.

    client_test.py   # with LAYERFLOW_COORDINATOR_BIN, LAYERFLOW_WORKER_BIN,
                     # LAYERFLOW_CLI_BIN set (tests/python/CMakeLists.txt)

Starts build/server/layerflow-coordinator (SQLite store in a temporary
folder) and one build/worker/layerflow-worker on the CPU, on loopback, then
submits a small sweep through the installed `layerflow` package and checks it
against the `layerflow` CLI of the same build: results() holds the rows of
`layerflow results --format csv` (same order, same values to the last bit),
paged or not; sweep files parse to the spec of `layerflow submit --dry-run`;
errors carry the status code and message the CLI prints.
"""

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

try:
    import layerflow
    import pandas as pd
    from google.protobuf import json_format
    from layerflow import LayerflowError
except ImportError as e:  # a clear failure, not a skip: CI must run this
    sys.exit("FAIL: cannot import the layerflow Python client (%s). scripts/bootstrap.sh "
             "installs it into its venv; by hand: pip install ./client/python" % e)

import grpc

BINARIES = {name: os.environ.get(var) for name, var in (
    ("coordinator", "LAYERFLOW_COORDINATOR_BIN"), ("worker", "LAYERFLOW_WORKER_BIN"),
    ("cli", "LAYERFLOW_CLI_BIN"))}

# Two models (a Transformer and an SSM) x two seeds; metrics keyed by layer
# only, by (layer, position) and by (layer, head): every optional column of
# the tidy rows is exercised. About a second on a 2-core CPU.
SWEEP_YAML = """\
name: py-client-test
models: [pythia-tiny, mamba-tiny]
seeds: [0, 1]
datasets: [{name: kvpr, num_classes: 2}]
context_lengths: [400]
num_prompts: 3
prompts_per_chunk: 2
analyses: [adjacent_cos, intertoken_cos, adjacent_cos_tokens, spectrum]
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CoordinatorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        missing = [n for n, path in BINARIES.items() if not path or not os.access(path, os.X_OK)]
        if missing:
            raise RuntimeError("set LAYERFLOW_{COORDINATOR,WORKER,CLI}_BIN; missing: %s"
                               % ", ".join(missing))
        cls.tmp = tempfile.mkdtemp(prefix="layerflow-py-")
        cls.procs = []
        port = free_port()
        cls.address = "127.0.0.1:%d" % port
        cls.logs = {}
        cls._start("coordinator", [BINARIES["coordinator"], "--listen", cls.address,
                                   "--db", os.path.join(cls.tmp, "store.db")])
        cls.client = layerflow.Client(cls.address, timeout=10)
        # Up when it answers (UNAVAILABLE until it listens).
        deadline = time.monotonic() + 30
        while True:
            try:
                cls.client.jobs()
                break
            except LayerflowError as e:
                if e.code != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        cls._start("worker", [BINARIES["worker"], "--coordinator", cls.address,
                              "--device", "cpu", "--idle-poll-ms", "100"])
        cls.sweep_path = os.path.join(cls.tmp, "sweep.yaml")
        with open(cls.sweep_path, "w") as f:
            f.write(SWEEP_YAML)
        cls.sweep_id = cls.client.submit(cls.sweep_path)
        cls.updates = []
        cls.final = cls.client.wait(cls.sweep_id, progress=cls.updates.append, timeout=300)

    @classmethod
    def _start(cls, name, argv):
        log = open(os.path.join(cls.tmp, name + ".log"), "w")
        cls.logs[name] = log.name
        cls.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        log.close()

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        for proc in reversed(cls.procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def cli(self, *args, ok=True):
        result = subprocess.run([BINARIES["cli"], "--coordinator", self.address, *args],
                                capture_output=True, text=True, timeout=120)
        if ok and result.returncode != 0:
            self.fail("layerflow %s: exit %d: %s" % (" ".join(args), result.returncode,
                                                     result.stderr))
        return result

    def cli_error(self, *args):
        """The CLI's one error line without 'error: ' ("CODE: message")."""
        result = self.cli(*args, ok=False)
        self.assertEqual(result.returncode, 1, result.stderr)
        line = result.stderr.strip().splitlines()[-1]
        self.assertTrue(line.startswith("error: "), line)
        return line[len("error: "):]

    def logs_tail(self):
        out = []
        for name, path in self.logs.items():
            with open(path) as f:
                out.append("--- %s\n%s" % (name, "".join(f.readlines()[-20:])))
        return "\n".join(out)

    # --- the sweep ---------------------------------------------------------

    def test_sweep_succeeded_and_watch_progressed(self):
        self.assertEqual(self.final.state, "succeeded", self.logs_tail())
        self.assertEqual((self.final.jobs_total, self.final.jobs_succeeded), (4, 4))
        self.assertEqual(self.final.chunks_committed, 8)  # 4 jobs x ceil(3 / 2)
        self.assertTrue(self.updates and self.updates[-1].done)
        self.assertTrue(all(not u.done for u in self.updates[:-1]))
        committed = [u.chunks_committed for u in self.updates]
        self.assertEqual(committed, sorted(committed))
        self.assertEqual(self.final.progress_line(),
                         "[====================] 4/4 jobs done, 0 running, 0 failed · 8/8 chunks")
        self.assertEqual(self.final.summary(),
                         "sweep %s succeeded: 4/4 jobs succeeded" % self.sweep_id)
        # A finished sweep's watch is one update, done.
        again = list(self.client.watch(self.sweep_id))
        self.assertEqual([u.state for u in again], ["succeeded"])

    def test_sweeps_and_jobs(self):
        sweep = self.client.sweep(self.sweep_id)
        self.assertEqual((sweep.sweep_id, sweep.name, sweep.state),
                         (self.sweep_id, "py-client-test", "succeeded"))
        self.assertIn(self.sweep_id, [s.sweep_id for s in self.client.sweeps()])
        jobs = self.client.jobs(self.sweep_id)
        self.assertEqual([(j.model, j.seed) for j in jobs],
                         [("pythia-tiny", 0), ("pythia-tiny", 1), ("mamba-tiny", 0),
                          ("mamba-tiny", 1)])
        for job in jobs:
            self.assertEqual((job.state, job.kind, job.dataset, job.context_length),
                             ("succeeded", "extract", "kvpr", 400))
            self.assertEqual((job.chunks_committed, job.chunks_total, job.error), (2, 2, ""))
        # One job a page: four pages, the same jobs.
        with layerflow.Client(self.address, page_size=1) as paged:
            self.assertEqual([j.job_id for j in paged.jobs(self.sweep_id)],
                             [j.job_id for j in jobs])
        self.assertEqual(self.client.jobs(self.sweep_id, state="failed"), [])
        self.assertEqual(len(self.client.jobs(self.sweep_id, state="succeeded")), 4)
        # The ids the CLI lists.
        listed = self.cli("jobs", self.sweep_id).stdout
        for job in jobs:
            self.assertIn(job.job_id, listed)
        with self.assertRaises(ValueError):
            self.client.jobs(self.sweep_id, state="done")

    # --- results vs the CLI's CSV --------------------------------------------

    def cli_csv(self, *filters):
        return self.cli_csv_of(self.sweep_id, *filters)

    def cli_csv_of(self, sweep_id, *filters):
        text = self.cli("results", sweep_id, "--format", "csv", *filters).stdout
        reader = csv.reader(io.StringIO(text))
        return next(reader), list(reader)

    def assert_frame_is_csv(self, df, header, rows):
        self.assertEqual(list(df.columns), header)
        self.assertEqual(len(df), len(rows))
        ints = {"seed", "context_length", "layer", "count"}
        optional = {"layer_b", "head", "position"}
        floats = {"value", "std"}
        records = df.to_dict("records")
        for i, (record, row) in enumerate(zip(records, rows)):
            for name, text in zip(header, row):
                got = record[name]
                where = "row %d (%s), column %s" % (i, ",".join(row), name)
                if name in floats:
                    # The CSV's shortest round-trip text parses to the same double.
                    self.assertEqual(float(text), got, where)
                    self.assertIsInstance(got, float, where)
                elif name in ints:
                    self.assertEqual(int(text), got, where)
                elif name in optional:
                    if text == "":
                        self.assertTrue(pd.isna(got), where)
                    else:
                        self.assertEqual(int(text), got, where)
                else:
                    self.assertEqual(text, got, where)

    def test_results_match_cli_csv(self):
        df = self.client.results(self.sweep_id)
        header, rows = self.cli_csv()
        self.assertEqual(header, layerflow.RESULT_COLUMNS)
        self.assert_frame_is_csv(df, header, rows)
        # What the rows hold, not just that they agree.
        self.assertEqual(set(df.sweep_id), {self.sweep_id})
        self.assertEqual(df.job_id.nunique(), 4)
        self.assertEqual(set(df["count"]), {3})
        metrics = set(df.metric)
        for metric in ("adjacent_cos", "intertoken_cos", "adjacent_cos_tokens",
                       "spectrum_q50"):
            self.assertIn(metric, metrics)
        cos = df[df.metric.isin(["adjacent_cos", "intertoken_cos"])]
        self.assertTrue(((cos.value >= -1 - 1e-9) & (cos.value <= 1 + 1e-9)).all())
        self.assertTrue((df["std"] >= 0).all())
        self.assertTrue(df.position.notna().any() and df["head"].notna().any())
        self.assertTrue(df[df.metric == "intertoken_cos"].position.isna().all())
        for column in ("layer_b", "head", "position"):
            self.assertEqual(str(df[column].dtype), "Int64")
        self.assertIs(df.layer_b.iloc[0], pd.NA)
        # One value per tidy key.
        key = ["job_id", "metric", "layer", "layer_b", "head", "position"]
        self.assertFalse(df.duplicated(key).any())
        # The pivot of docs/python.md.
        pivot = (df[df.metric == "intertoken_cos"]
                 .pivot_table(index="layer", columns="model", values="value", aggfunc="mean"))
        self.assertEqual(sorted(pivot.columns), ["mamba-tiny", "pythia-tiny"])
        expected = df[(df.metric == "intertoken_cos") & (df.model == "mamba-tiny")
                      & (df.layer == 0)].value.mean()
        self.assertAlmostEqual(pivot.loc[0, "mamba-tiny"], expected, places=15)

    def test_results_paged_and_filtered(self):
        full = self.client.results(self.sweep_id)
        self.assertGreater(len(full), 1000)
        # 7 rows a page: hundreds of pages, every row once, in order.
        with layerflow.Client(self.address, page_size=7) as paged:
            pd.testing.assert_frame_equal(paged.results(self.sweep_id), full, check_exact=True)
            pages = 0
            request = layerflow.v1.coordinator_pb2.QueryResultsRequest(
                sweep_id=self.sweep_id, page_size=7)
            while True:
                pages += 1
                reply = paged._stub.QueryResults(request)
                if not reply.next_page_token:
                    break
                request.page_token = reply.next_page_token
            self.assertGreaterEqual(pages, len(full) // 7)
        for filters in (["--metric", "intertoken_cos"], ["--model", "mamba-tiny"],
                        ["--job", self.sweep_id + "-1"]):
            header, rows = self.cli_csv(*filters)
            kwargs = {filters[0][2:]: filters[1]}
            df = self.client.results(self.sweep_id, **kwargs)
            self.assertGreater(len(df), 0, filters)
            self.assert_frame_is_csv(df, header, rows)
        empty = self.client.results(self.sweep_id, metric="no_such_metric")
        self.assertEqual(list(empty.columns), layerflow.RESULT_COLUMNS)
        self.assertEqual(len(empty), 0)

    # --- errors --------------------------------------------------------------

    def test_unknown_sweep_is_not_found(self):
        for call, cli_args in (
                (lambda: self.client.results("sw-does-not-exist"),
                 ("results", "sw-does-not-exist", "--format", "csv")),
                (lambda: self.client.sweep("sw-does-not-exist"), None),
                (lambda: list(self.client.watch("sw-does-not-exist")),
                 ("watch", "sw-does-not-exist"))):
            with self.assertRaises(LayerflowError) as raised:
                call()
            error = raised.exception
            self.assertEqual(error.code, grpc.StatusCode.NOT_FOUND)
            self.assertEqual(error.code_name, "NOT_FOUND")
            self.assertIn("sw-does-not-exist", error.message)
            self.assertEqual(str(error), "NOT_FOUND: " + error.message)
            if cli_args:
                self.assertEqual(str(error), self.cli_error(*cli_args))

    def test_sweep_file_errors_as_the_cli(self):
        cases = {
            "bad_seed.yaml": "name: e2e\nmodels: [pythia-tiny]\nseeds: [0, abc]\n",
            "typo.yaml": "name: e2e\nseed: 1\n",
            "repeated.yaml": "name: e2e\nmodels: [pythia-tiny]\nmodels: [mamba-tiny]\n",
            "float.yaml": "name: e2e\nmodels: [pythia-tiny]\nnum_prompts: 8.5\n",
            "probe.yaml": "name: e2e\nmodels: [pythia-tiny]\nprobe: {classes: 3}\n",
            "root.yaml": "- name\n",
            "unknown_model.yaml": "name: e2e\nmodels: [pythia-7m]\n",  # the coordinator's
        }
        for name, text in cases.items():
            path = os.path.join(self.tmp, name)
            with open(path, "w") as f:
                f.write(text)
            with self.assertRaises(LayerflowError, msg=name) as raised:
                self.client.submit(path)
            self.assertEqual(raised.exception.code, grpc.StatusCode.INVALID_ARGUMENT, name)
            self.assertEqual(str(raised.exception), self.cli_error("submit", path), name)
        missing = os.path.join(self.tmp, "missing.yaml")
        with self.assertRaises(LayerflowError) as raised:
            self.client.submit(missing)
        self.assertEqual(raised.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(str(raised.exception), self.cli_error("submit", missing))

    def test_sweep_files_parse_as_the_cli(self):
        texts = [
            SWEEP_YAML,
            "name: e2e\nmodels: pythia-tiny\nseeds: 3\nprobe: kvpr\npriority: -2\n"
            "example_cka: TRUE\ndatasets: {name: kvpr, num_classes: 3}\n",
            "name: p\nmodels: [mamba-tiny]\ninit_schemes: [reference, normal(0.02)]\n"
            "probe: {task: kvpr, classes: 3, seeds: [0, 1], lr: 5e-3, epochs: 60,\n"
            "        train_fraction: 0.5, val_fraction: .25, feature_dtype: fp32}\n"
            "dtype: bf16\nbatch_prompts: 2\n",
        ]
        for i, text in enumerate(texts):
            path = os.path.join(self.tmp, "parse%d.yaml" % i)
            with open(path, "w") as f:
                f.write(text)
            cli = json.loads(self.cli("submit", "--dry-run", path).stdout)
            ours = json_format.MessageToDict(layerflow.parse_sweep_yaml(text),
                                             preserving_proto_field_name=True)
            self.assertEqual(ours, cli, text)

    def test_submit_text_and_dict(self):
        text = "name: py-text\nmodels: [pythia-tiny]\ndatasets: [{name: kvpr, num_classes: 2}]\n" \
               "context_lengths: [400]\nnum_prompts: 1\n"
        sweep_id = self.client.submit(text)
        self.assertEqual(self.client.wait(sweep_id, progress=False, timeout=300).state,
                         "succeeded", self.logs_tail())
        df = self.client.results(sweep_id)
        header, rows = self.cli_csv_of(sweep_id)
        self.assert_frame_is_csv(df, header, rows)
        self.assertEqual(set(df["count"]), {1})
        same = self.client.submit({"name": "py-dict", "models": ["pythia-tiny"],
                                   "datasets": [{"name": "kvpr", "num_classes": 2}],
                                   "context_lengths": [400], "num_prompts": 1})
        self.assertEqual(len(self.client.jobs(same)), 1)
        self.client.wait(same, progress=False, timeout=300)

    def test_unavailable_names_the_address(self):
        with layerflow.Client("127.0.0.1:1", timeout=5) as nowhere:
            with self.assertRaises(LayerflowError) as raised:
                nowhere.jobs()
        self.assertEqual(raised.exception.code, grpc.StatusCode.UNAVAILABLE)
        self.assertTrue(str(raised.exception).endswith("(coordinator 127.0.0.1:1)"),
                        str(raised.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)
