"""The committed stubs in shared/proto must be exactly what protos/generate.py produces from the .proto."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "shared" / "proto"


def test_committed_stubs_match_the_proto(tmp_path):
    subprocess.run([sys.executable, str(REPO / "protos" / "generate.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    fresh = {p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*")}
    committed = {p.relative_to(COMMITTED) for p in COMMITTED.rglob("*_pb2*.py*")}
    assert fresh, "the generator produced nothing"
    assert fresh == committed, "stub files differ: run `python protos/generate.py`"
    stale = [str(rel) for rel in fresh if (tmp_path / rel).read_bytes() != (COMMITTED / rel).read_bytes()]
    assert not stale, f"stubs drifted from the .proto ({stale}): run `python protos/generate.py`"


def test_stubs_import_from_the_shared_package():
    from shared.proto.llada.serve.v1 import jobs_pb2, jobs_pb2_grpc

    assert jobs_pb2.DESCRIPTOR.package == "llada.serve.v1"
    assert hasattr(jobs_pb2_grpc, "JobServiceStub")
