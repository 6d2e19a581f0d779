"""Generates the Python gRPC stubs for protos/llada/serve/v1/*.proto into shared/proto/.

    python protos/generate.py [--out DIR]

protoc names generated imports after the proto package path (``from llada.serve.v1 import ...``);
the stubs live inside the ``shared.proto`` package instead, so those imports are rewritten to
absolute ``shared.proto.llada.serve.v1`` imports. The committed stubs are exactly what this
script writes (tests/gateway/test_stubs_current.py regenerates and compares).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
DEFAULT_OUT = REPO_ROOT / "shared" / "proto"
STUB_PACKAGE = "shared.proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "llada").rglob("*.proto"))


def _rewrite_imports(path: Path) -> None:
    text = path.read_text()
    # "from llada.serve.v1 import jobs_pb2" -> "from shared.proto.llada.serve.v1 import jobs_pb2"
    text = re.sub(r"^from llada\.", f"from {STUB_PACKAGE}.llada.", text, flags=re.MULTILINE)
    text = re.sub(r"^import llada\.", f"import {STUB_PACKAGE}.llada.", text, flags=re.MULTILINE)
    path.write_text(text)


def generate(out: Path) -> list[Path]:
    """Runs protoc into ``out`` and returns the generated files (relative to ``out``)."""
    out.mkdir(parents=True, exist_ok=True)
    protos = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    # grpc_tools' __main__ adds the well-known types (google/protobuf/*.proto) to the include path.
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}", f"--python_out={out}",
         f"--pyi_out={out}", f"--grpc_python_out={out}", *protos],
        check=True, cwd=PROTO_ROOT,
    )
    generated = sorted(p for p in out.rglob("*.py*") if p.name.endswith(GENERATED_SUFFIXES))
    for path in generated:
        _rewrite_imports(path)
    # Every folder on the way down must be a package for the absolute imports above.
    for folder in {p.parent for p in generated}:
        while folder != out.parent and folder != folder.parent:
            (folder / "__init__.py").touch()
            if folder == out:
                break
            folder = folder.parent
    return [p.relative_to(out) for p in generated]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: shared/proto)")
    args = parser.parse_args(argv)
    for rel in generate(args.out):
        print(args.out / rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
