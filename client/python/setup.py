"""Builds the layerflow Python client; generates its gRPC stubs from proto/.

The .proto files live in the repository's proto/ folder, outside this package
(client/python/../../proto). They are found, in this order, in
  1. $LAYERFLOW_PROTO_DIR (a folder holding layerflow/v1/*.proto),
  2. ./proto, the copy that `sdist` puts into a source distribution,
  3. ../../proto, the repository's own folder (`pip install ./client/python`).
build_py runs grpcio-tools' protoc on every layerflow/v1/*.proto into the
build tree (into src/ for an editable install), so nothing generated is ever
committed and the stubs always match the protos they were built from.
"""

import glob
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_PACKAGE = os.path.join("layerflow", "v1")


def proto_root():
    candidates = []
    if os.environ.get("LAYERFLOW_PROTO_DIR"):
        candidates.append(os.environ["LAYERFLOW_PROTO_DIR"])
    candidates += [os.path.join(HERE, "proto"), os.path.join(HERE, "..", "..", "proto")]
    for root in candidates:
        if glob.glob(os.path.join(root, PROTO_PACKAGE, "*.proto")):
            return os.path.abspath(root)
    raise SystemExit(
        "layerflow: no layerflow/v1/*.proto found (looked in %s); build from a "
        "clone of the repository (pip install ./client/python) or set "
        "LAYERFLOW_PROTO_DIR to the repository's proto/ folder" % ", ".join(candidates))


def generate_stubs(out_dir):
    """protoc --python_out --pyi_out --grpc_python_out for every proto."""
    from grpc_tools import protoc  # a build requirement (pyproject.toml)

    try:
        from importlib.resources import files

        well_known = str(files("grpc_tools") / "_proto")
    except (ImportError, AttributeError):  # Python < 3.9
        import pkg_resources

        well_known = pkg_resources.resource_filename("grpc_tools", "_proto")
    root = proto_root()
    protos = sorted(glob.glob(os.path.join(root, PROTO_PACKAGE, "*.proto")))
    os.makedirs(os.path.join(out_dir, PROTO_PACKAGE), exist_ok=True)
    args = ["grpc_tools.protoc", "--proto_path=" + root, "--proto_path=" + well_known,
            "--python_out=" + out_dir, "--pyi_out=" + out_dir,
            "--grpc_python_out=" + out_dir] + protos
    print("layerflow: generating stubs of %s into %s" % (
        ", ".join(os.path.relpath(p, root) for p in protos), out_dir))
    if protoc.main(args) != 0:
        raise SystemExit("layerflow: protoc failed on %s" % ", ".join(protos))


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        # An editable install imports from src/: the stubs go there (ignored
        # by git); a regular build puts them beside the copied sources.
        generate_stubs(os.path.join(HERE, "src") if getattr(self, "editable_mode", False)
                       else self.build_lib)


class SdistWithProtos(sdist):
    """A source distribution carries the protos in ./proto (see proto_root)."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        source = proto_root()
        target = os.path.join(base_dir, "proto", PROTO_PACKAGE)
        os.makedirs(target, exist_ok=True)
        for proto in glob.glob(os.path.join(source, PROTO_PACKAGE, "*.proto")):
            shutil.copy2(proto, target)


setup(cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProtos})
