"""The one exception the client raises."""

import grpc


class LayerflowError(Exception):
    """An error from the coordinator, or a sweep file that cannot be sent.

    Attributes:
      code: the gRPC status code (``grpc.StatusCode.NOT_FOUND``, ...).
      code_name: its canonical name (``"NOT_FOUND"``), as the CLI prints it.
      message: the coordinator's message (the status details).

    ``str(error)`` is ``"CODE_NAME: message"``, the CLI's ``error:`` line.
    """

    def __init__(self, code, message):
        self.code = code
        self.code_name = code.name
        self.message = message
        super().__init__("%s: %s" % (self.code_name, message))

    def __reduce__(self):  # picklable (multiprocessing, joblib)
        return (type(self), (self.code, self.message))


def from_rpc_error(error, address):
    """A LayerflowError from a grpc.RpcError of a call to ``address``."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    if code is None:
        code = grpc.StatusCode.UNKNOWN
    message = message or ""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        # Most often a wrong address or a coordinator that is not up.
        message = "%s (coordinator %s)" % (message, address)
    return LayerflowError(code, message)
