"""Container health check for the gateway: asks the standard gRPC health service for SERVING.

Exit status 0 when the server answers SERVING, 1 otherwise (unreachable, NOT_SERVING, timeout), as
Docker's HEALTHCHECK expects. Kubernetes uses its built-in gRPC probe instead and needs no script.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(target: str, service: str, timeout_s: float, ca_file: str | None, server_name: str | None) -> str:
    """The serving status name, or a short reason starting with 'error:'."""
    if ca_file is None:
        channel = grpc.insecure_channel(target)
    else:
        with open(ca_file, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        # The certificate names the public host, not 127.0.0.1 inside the container.
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(target, credentials, options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as e:
            return f"error: {e.code().name} {e.details() or ''}".rstrip()
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", default="127.0.0.1:50051", help="host:port of the gRPC server")
    parser.add_argument("--service", default="", help="service name to ask about ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    parser.add_argument("--ca-file", help="PEM CA or self-signed certificate: connect with TLS")
    parser.add_argument("--server-name", help="name the server certificate is issued for (with --ca-file)")
    args = parser.parse_args(argv)
    status = check(args.target, args.service, args.timeout, args.ca_file, args.server_name)
    print(f"{args.target}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
