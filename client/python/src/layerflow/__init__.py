"""layerflow: the Python client of the layerflow coordinator.

    import layerflow
    client = layerflow.Client("127.0.0.1:7531")
    sweep_id = client.submit("sweep.yaml")
    client.wait(sweep_id)
    df = client.results(sweep_id)        # a tidy pandas.DataFrame

docs/python.md has the whole tour.
"""

try:
    from layerflow.v1 import coordinator_pb2 as _coordinator_pb2  # noqa: F401
except ImportError as _e:  # pragma: no cover - a source tree without its stubs
    raise ImportError(
        "layerflow: the gRPC stubs (layerflow/v1/*_pb2.py) are missing or do not "
        "import (%s); they are generated from proto/ when the package is built: "
        "pip install ./client/python" % _e) from _e

from layerflow.client import (DEFAULT_ADDRESS, JOB_STATES, RESULT_COLUMNS, Client, Job,
                              Sweep, rows_to_frame)
from layerflow.errors import LayerflowError
from layerflow.sweep_file import parse_sweep_yaml, read_sweep_file

__version__ = "0.1.0"

__all__ = [
    "Client", "Job", "Sweep", "LayerflowError", "RESULT_COLUMNS", "JOB_STATES",
    "DEFAULT_ADDRESS", "parse_sweep_yaml", "read_sweep_file", "rows_to_frame",
]
