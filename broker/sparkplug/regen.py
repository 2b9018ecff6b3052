"""Regenerate `sparkplug_b_pb2.py` and its `.pyi` stub from `sparkplug_b.proto` (needs the dev extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def main() -> int:
    """Run protoc (from grpcio-tools) with the mypy-protobuf plugin on the schema in this folder."""
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT}",
        f"--plugin=protoc-gen-mypy={Path(sys.executable).parent / 'protoc-gen-mypy'}",
        f"--python_out={ROOT}", f"--mypy_out={ROOT}", str(HERE / "sparkplug_b.proto"),
    ]
    return subprocess.call(cmd)


if __name__ == "__main__":
    raise SystemExit(main())
