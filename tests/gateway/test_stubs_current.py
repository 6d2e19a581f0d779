"""The committed stubs in shared/proto must be exactly what protos/generate.py produces from the .proto."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "shared" / "proto"


def _stubs(root: Path) -> set[Path]:
    """The generated sources under `root` (not the bytecode Python caches beside them)."""
    return {p.relative_to(root) for p in root.rglob("*_pb2*") if p.suffix in (".py", ".pyi")}


def test_committed_stubs_match_the_proto(tmp_path):
    subprocess.run([sys.executable, str(REPO / "protos" / "generate.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    fresh = _stubs(tmp_path)
    committed = _stubs(COMMITTED)
    assert fresh, "the generator produced nothing"
    assert fresh == committed, "stub files differ: run `python protos/generate.py`"
    stale = [str(rel) for rel in fresh if (tmp_path / rel).read_bytes() != (COMMITTED / rel).read_bytes()]
    assert not stale, f"stubs drifted from the .proto ({stale}): run `python protos/generate.py`"


def test_stubs_import_from_the_shared_package():
    from shared.proto.llada.serve.v1 import jobs_pb2, jobs_pb2_grpc

    assert jobs_pb2.DESCRIPTOR.package == "llada.serve.v1"
    assert hasattr(jobs_pb2_grpc, "JobServiceStub")
