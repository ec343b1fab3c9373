"""Build step only: compile proto/roomcast.proto into roomcast/core/pb/.

Static metadata lives in pyproject.toml.
"""

from __future__ import annotations

import pathlib
import re

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).parent
PROTO = ROOT / "proto" / "roomcast.proto"
OUT = ROOT / "roomcast" / "core" / "pb"


def compile_proto() -> None:
    from grpc_tools import protoc  # build requirement (pyproject [build-system])

    OUT.mkdir(exist_ok=True)
    (OUT / "__init__.py").write_text('"""Generated protobuf code (do not edit; see proto/)."""\n')
    args = ["protoc", f"-I{PROTO.parent}", f"--python_out={OUT}", f"--pyi_out={OUT}", str(PROTO)]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on proto/roomcast.proto")
    for generated in OUT.glob("roomcast_pb2.py*"):
        text = generated.read_text()
        generated.write_text(
            re.sub(r"^import roomcast_pb2", "from . import roomcast_pb2", text, flags=re.M)
        )


class BuildWithProto(build_py):
    def run(self) -> None:
        compile_proto()
        # packages.find ran before the code existed: on a clean tree pb/ must be added here.
        if self.packages is not None and "roomcast.core.pb" not in self.packages:
            self.packages.append("roomcast.core.pb")
        super().run()


setup(cmdclass={"build_py": BuildWithProto})
