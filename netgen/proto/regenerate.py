"""Regenerate fcnkit_caffe_pb2.py from fcnkit_caffe.proto (python -m netgen.proto.regenerate).

The generated module is committed so that using fcnkit needs only the protobuf runtime;
grpcio-tools (which bundles protoc) is needed only to run this after editing the .proto.
"""
from __future__ import annotations

import sys
from pathlib import Path

from netgen.errors import FcnkitError, cli_entry

HERE = Path(__file__).resolve().parent
PROTO_NAME = "fcnkit_caffe.proto"
MODULE_NAME = "fcnkit_caffe_pb2.py"


def generate(out_dir: str | Path = HERE) -> Path:
    """Run protoc on the .proto into `out_dir`; return the generated module's path.

    The proto is compiled by its bare name (include path = this folder), so the
    descriptor is registered as "fcnkit_caffe.proto" wherever the checkout lives.
    """
    try:
        from grpc_tools import protoc
    except ImportError:
        raise FcnkitError("regenerating the schema needs grpcio-tools (pip install grpcio-tools)") from None
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FcnkitError(f"{out_dir}: output folder does not exist")
    rc = protoc.main(["protoc", f"-I{HERE}", f"--python_out={out_dir}", PROTO_NAME])
    if rc != 0:
        raise FcnkitError(f"{HERE / PROTO_NAME}: protoc failed (exit {rc}); see messages above")
    return out_dir / MODULE_NAME


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        raise FcnkitError("usage: python -m netgen.proto.regenerate  (takes no arguments)")
    print(generate())
    return 0


if __name__ == "__main__":
    sys.exit(main())
