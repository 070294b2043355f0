"""A client of the layerflow coordinator (proto/layerflow/v1/coordinator.proto)."""

import dataclasses
import os
import sys
from typing import Iterator, List, Optional

import grpc

from layerflow import sweep_file
from layerflow.errors import LayerflowError, from_rpc_error
from layerflow.v1 import coordinator_pb2, coordinator_pb2_grpc, experiment_pb2

#: Where the CLI looks too: ``$LAYERFLOW_COORDINATOR``, else this.
DEFAULT_ADDRESS = "127.0.0.1:7531"

#: The columns of :meth:`Client.results`, those of ``layerflow results
#: --format csv`` in the same order (docs/metrics.md, "Tidy result rows").
RESULT_COLUMNS = [
    "sweep_id", "job_id", "model", "init_scheme", "seed", "dataset", "context_length",
    "metric", "layer", "value", "std", "count", "layer_b", "head", "position",
]
_OPTIONAL_KEYS = ("layer_b", "head", "position")
_DTYPES = {
    "sweep_id": "object", "job_id": "object", "model": "object", "init_scheme": "object",
    "seed": "int64", "dataset": "object", "context_length": "int64", "metric": "object",
    "layer": "int64", "value": "float64", "std": "float64", "count": "int64",
    # Unset ("not applicable") is <NA>: 0 is a valid layer, head or position.
    "layer_b": "Int64", "head": "Int64", "position": "Int64",
}

# The coordinator's largest reply (common/grpc_limits.h, kMaxQueryReplyBytes).
_MAX_MESSAGE_BYTES = 1 << 30


def _enum_names(enum, prefix):
    return {value.number: value.name[len(prefix):].lower()
            for value in enum.DESCRIPTOR.values}


_JOB_STATE_NAMES = _enum_names(experiment_pb2.JobState, "JOB_STATE_")
_SWEEP_STATE_NAMES = _enum_names(experiment_pb2.SweepState, "SWEEP_STATE_")
_JOB_KIND_NAMES = _enum_names(experiment_pb2.JobKind, "JOB_KIND_")
#: The values of ``Client.jobs(state=...)``, as the CLI's ``--state``.
JOB_STATES = tuple(name for number, name in sorted(_JOB_STATE_NAMES.items()) if number)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A sweep's state and job counts (``layerflow.v1.Sweep``)."""

    sweep_id: str
    name: str
    #: "active", "succeeded", "failed" or "cancelled".
    state: str
    jobs_total: int
    jobs_queued: int
    jobs_running: int
    jobs_succeeded: int
    jobs_failed: int
    jobs_cancelled: int
    chunks_committed: int
    chunks_total: int
    created_unix_ms: int
    #: The message itself (its ``spec`` is the SweepSpec as stored).
    proto: experiment_pb2.Sweep = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, sweep):
        return cls(
            sweep_id=sweep.sweep_id, name=sweep.spec.name,
            state=_SWEEP_STATE_NAMES.get(sweep.state, str(sweep.state)),
            jobs_total=sweep.jobs_total, jobs_queued=sweep.jobs_queued,
            jobs_running=sweep.jobs_running, jobs_succeeded=sweep.jobs_succeeded,
            jobs_failed=sweep.jobs_failed, jobs_cancelled=sweep.jobs_cancelled,
            chunks_committed=sweep.chunks_committed, chunks_total=sweep.chunks_total,
            created_unix_ms=sweep.created_unix_ms, proto=sweep)

    @property
    def done(self) -> bool:
        """True once every job has finished (succeeded, failed or cancelled)."""
        return self.state not in ("active", "unspecified")

    @property
    def jobs_done(self) -> int:
        return self.jobs_succeeded + self.jobs_failed + self.jobs_cancelled

    def progress_line(self, bar_width=20) -> str:
        """The CLI's progress line: ``[====>   ] 2/4 jobs done, ... · 8/16 chunks``."""
        if self.chunks_total > 0:
            fraction = self.chunks_committed / self.chunks_total
        elif self.jobs_total > 0:
            fraction = self.jobs_done / self.jobs_total
        else:
            fraction = 0.0
        if self.done:
            fraction = 1.0
        filled = int(min(max(fraction, 0.0), 1.0) * bar_width)
        bar = "[" + "=" * filled
        if filled < bar_width:
            bar += ">" + " " * (bar_width - filled - 1)
        line = "%s] %d/%d jobs done, %d running, %d failed" % (
            bar, self.jobs_done, self.jobs_total, self.jobs_running, self.jobs_failed)
        if self.jobs_cancelled:
            line += ", %d cancelled" % self.jobs_cancelled
        return line + " · %d/%d chunks" % (self.chunks_committed, self.chunks_total)

    def summary(self) -> str:
        """The CLI's closing line: ``sweep ID succeeded: 4/4 jobs succeeded``."""
        line = "sweep %s %s: %d/%d jobs succeeded" % (
            self.sweep_id, self.state, self.jobs_succeeded, self.jobs_total)
        if self.jobs_failed:
            line += ", %d failed" % self.jobs_failed
        if self.jobs_cancelled:
            line += ", %d cancelled" % self.jobs_cancelled
        return line


@dataclasses.dataclass(frozen=True)
class Job:
    """One job of a sweep (``layerflow.v1.Job``)."""

    job_id: str
    sweep_id: str
    #: "extract" or "probe".
    kind: str
    #: "queued", "running", "succeeded", "failed" or "cancelled".
    state: str
    model: str
    init_scheme: str
    seed: int
    dataset: str
    context_length: int
    attempts: int
    chunks_committed: int
    chunks_total: int
    #: Why it failed (state "failed" only).
    error: str
    #: The worker holding the lease (state "running" only).
    worker_id: str
    #: The job that must succeed first (a PROBE job's EXTRACT job).
    depends_on: str
    created_unix_ms: int
    updated_unix_ms: int
    proto: experiment_pb2.Job = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, job):
        spec = job.spec
        return cls(
            job_id=job.job_id, sweep_id=job.sweep_id,
            kind=_JOB_KIND_NAMES.get(spec.kind, str(spec.kind)),
            state=_JOB_STATE_NAMES.get(job.state, str(job.state)),
            model=spec.model, init_scheme=spec.init_scheme, seed=spec.seed,
            dataset=spec.dataset.name, context_length=spec.context_length,
            attempts=job.attempts, chunks_committed=job.chunks_committed,
            chunks_total=job.chunks_total, error=job.error, worker_id=job.worker_id,
            depends_on=job.depends_on, created_unix_ms=job.created_unix_ms,
            updated_unix_ms=job.updated_unix_ms, proto=job)


def _sweep_id(sweep):
    """A sweep id from an id string or anything with a ``sweep_id``."""
    value = getattr(sweep, "sweep_id", sweep)
    if not isinstance(value, str):
        raise TypeError("expected a sweep id (str) or a Sweep, got %r" % (sweep,))
    return value


def rows_to_frame(rows):
    """A DataFrame of ``layerflow.v1.ResultRow`` messages (RESULT_COLUMNS)."""
    import pandas as pd

    columns = {name: [] for name in RESULT_COLUMNS}
    for row in rows:
        for name in RESULT_COLUMNS:
            if name in _OPTIONAL_KEYS:
                columns[name].append(getattr(row, name) if row.HasField(name) else None)
            else:
                columns[name].append(getattr(row, name))
    return pd.DataFrame({name: pd.Series(values, dtype=_DTYPES[name])
                         for name, values in columns.items()}, columns=RESULT_COLUMNS)


class Client:
    """A connection to one coordinator.

    Args:
      address: ``HOST:PORT``; default ``$LAYERFLOW_COORDINATOR``, else
        ``127.0.0.1:7531`` (as the CLI).
      token: sent as ``authorization: Bearer TOKEN`` on every call; default
        ``$LAYERFLOW_TOKEN``, else none.
      timeout: seconds for each unary call (each page of a listing); watches
        are not bounded unless asked.
      page_size: rows (jobs) asked for per page of QueryResults (ListJobs);
        0 takes the coordinator's default. Every page is always followed.
      credentials: ``grpc.ssl_channel_credentials(...)`` for a TLS
        coordinator; default a plaintext channel.

    Every error is raised as :class:`layerflow.LayerflowError` carrying the
    gRPC status code and the coordinator's message. Use it as a context
    manager, or call :meth:`close`, to close the channel.
    """

    def __init__(self, address: Optional[str] = None, token: Optional[str] = None, *,
                 timeout: float = 30.0, page_size: int = 0,
                 credentials: Optional[grpc.ChannelCredentials] = None):
        self.address = address or os.environ.get("LAYERFLOW_COORDINATOR") or DEFAULT_ADDRESS
        token = token if token is not None else os.environ.get("LAYERFLOW_TOKEN")
        if page_size < 0:
            raise ValueError("page_size must be >= 0, got %d" % page_size)
        self.timeout = timeout
        self.page_size = page_size
        options = [("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES)]
        if credentials is not None:
            self._channel = grpc.secure_channel(self.address, credentials, options)
        else:
            self._channel = grpc.insecure_channel(self.address, options)
        self._stub = coordinator_pb2_grpc.CoordinatorStub(self._channel)
        self._metadata = (("authorization", "Bearer " + token),) if token else ()

    # --- plumbing ----------------------------------------------------------

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "Client(%r)" % self.address

    def _call(self, method, request, timeout=None):
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout,
                          metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.address) from None

    # --- sweeps ------------------------------------------------------------

    def submit(self, sweep) -> str:
        """Submits a sweep; returns its id.

        ``sweep`` is a sweep file's path (str or os.PathLike), its YAML text,
        a dict of the same fields, or a ``layerflow.v1.SweepSpec``. The file
        is checked here as strictly as ``layerflow submit`` does (unknown
        fields, bad values, with file:line:column) and nothing is sent when it
        is malformed; the coordinator then validates the sweep itself.
        """
        if isinstance(sweep, experiment_pb2.SweepSpec):
            spec = sweep
        elif isinstance(sweep, os.PathLike):
            spec = sweep_file.read_sweep_file(sweep)
        elif isinstance(sweep, str):
            if sweep_file.looks_like_path(sweep):
                spec = sweep_file.read_sweep_file(sweep)
            else:
                spec = sweep_file.parse_sweep_yaml(sweep)
        elif isinstance(sweep, dict):
            import yaml

            spec = sweep_file.parse_sweep_yaml(yaml.safe_dump(sweep), "<dict>")
        else:
            raise TypeError("submit() takes a path, YAML text, a dict or a SweepSpec; got %s"
                            % type(sweep).__name__)
        response = self._call(self._stub.SubmitSweep,
                              coordinator_pb2.SubmitSweepRequest(spec=spec))
        return response.sweep_id

    def sweep(self, sweep) -> Sweep:
        """One sweep's state and counts (NOT_FOUND for an unknown id)."""
        return Sweep.from_proto(self._call(
            self._stub.GetSweep, coordinator_pb2.GetSweepRequest(sweep_id=_sweep_id(sweep))))

    def sweeps(self) -> List[Sweep]:
        """Every sweep of the coordinator, oldest first.

        The API has no sweep listing: the ids are those of every job
        (ListJobs, all pages, in creation order), each sweep then read with
        GetSweep: one call per sweep.
        """
        ids = []
        seen = set()
        for job in self._list_jobs(coordinator_pb2.ListJobsRequest()):
            if job.sweep_id not in seen:
                seen.add(job.sweep_id)
                ids.append(job.sweep_id)
        return [self.sweep(sweep_id) for sweep_id in ids]

    def cancel(self, sweep) -> Sweep:
        """Cancels the sweep's queued and running jobs (FAILED_PRECONDITION
        when it has already finished)."""
        return Sweep.from_proto(self._call(
            self._stub.CancelSweep,
            coordinator_pb2.CancelSweepRequest(sweep_id=_sweep_id(sweep))))

    # --- jobs --------------------------------------------------------------

    def _list_jobs(self, request):
        request.page_size = self.page_size
        while True:
            response = self._call(self._stub.ListJobs, request)
            yield from response.jobs
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def jobs(self, sweep=None, state: Optional[str] = None) -> List[Job]:
        """The jobs of one sweep (default: of every sweep), in creation order,
        optionally only those in ``state`` (one of :data:`JOB_STATES`)."""
        request = coordinator_pb2.ListJobsRequest()
        if sweep is not None:
            request.sweep_id = _sweep_id(sweep)
        if state is not None:
            numbers = {name: number for number, name in _JOB_STATE_NAMES.items() if number}
            if state not in numbers:
                raise ValueError("state must be one of %s, got %r" % (", ".join(JOB_STATES), state))
            request.state = numbers[state]
        return [Job.from_proto(job) for job in self._list_jobs(request)]

    # --- progress ----------------------------------------------------------

    def watch(self, sweep, timeout: Optional[float] = None) -> Iterator[Sweep]:
        """Yields the sweep's state on every change until it finishes.

        The first item is the current state; the last one has ``done`` true.
        ``timeout`` (seconds, default none) bounds the whole watch
        (DEADLINE_EXCEEDED). Leaving the loop early ends the stream.
        """
        sweep_id = _sweep_id(sweep)
        call = self._stub.WatchSweep(coordinator_pb2.WatchSweepRequest(sweep_id=sweep_id),
                                     timeout=timeout, metadata=self._metadata)
        try:
            for update in call:
                state = Sweep.from_proto(update)
                yield state
                if state.done:
                    return
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.address) from None
        finally:
            call.cancel()
        raise LayerflowError(
            grpc.StatusCode.UNAVAILABLE,
            "the coordinator ended the watch of sweep %s before it finished (coordinator %s)"
            % (sweep_id, self.address))

    def wait(self, sweep, progress=True, timeout: Optional[float] = None) -> Sweep:
        """Blocks until the sweep finishes; returns its final state.

        ``progress``: True prints the CLI's progress line to stderr on every
        change (redrawn in place on a terminal) and its summary at the end;
        a callable is called with each :class:`Sweep` instead; False is
        silent. A failed sweep is returned, not raised: check ``.state``.
        """
        stream = sys.stderr
        redraw = progress is True and stream.isatty()
        final = None
        for state in self.watch(sweep, timeout=timeout):
            final = state
            if callable(progress):
                progress(state)
            elif progress:
                stream.write(("\r\033[K" if redraw else "") + state.progress_line()
                             + ("" if redraw else "\n"))
                stream.flush()
        if progress is True:
            stream.write(("\n" if redraw else "") + final.summary() + "\n")
            stream.flush()
        return final

    # --- results -----------------------------------------------------------

    def result_rows(self, sweep, model: str = "", metric: str = "",
                    job: str = "") -> Iterator[experiment_pb2.ResultRow]:
        """The ``layerflow.v1.ResultRow`` messages of a sweep, every page."""
        request = coordinator_pb2.QueryResultsRequest(
            sweep_id=_sweep_id(sweep), model=model or "", metric=metric or "",
            job_id=getattr(job, "job_id", job) or "", page_size=self.page_size)
        while True:
            response = self._call(self._stub.QueryResults, request)
            yield from response.rows
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def results(self, sweep, model: str = "", metric: str = "", job: str = ""):
        """The merged per-layer results of a sweep as a tidy pandas.DataFrame.

        One row per (job, metric, layer, layer_b, head, position), the
        columns and values of ``layerflow results --format csv``
        (:data:`RESULT_COLUMNS`): ``value`` is the mean over prompts,
        ``std`` the population standard deviation, ``count`` the prompts;
        ``layer_b`` / ``head`` / ``position`` are ``<NA>`` where they do not
        apply. The coordinator's derived rows (``v_loc(intertoken_cos)``,
        ...) follow each job's own. The filters are those of the CLI's
        ``--model``, ``--metric`` and ``--job``.
        """
        return rows_to_frame(self.result_rows(sweep, model=model, metric=metric, job=job))
