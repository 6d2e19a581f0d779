"""``llada-healthcheck gateway|worker|reaper|webhooks|http``: the container health check of each process kind.

Each kind has its own check, read from the same `LLADA_*` settings as the process it checks (a health check
runs in the process's container, with its environment):

- gateway: the standard gRPC health service answers SERVING on `LLADA_GRPC_LISTEN` (a wildcard host is asked
  on loopback), with TLS when `LLADA_TLS_CERT_FILE` is set (trusting that certificate unless --ca-file names
  the CA);
- worker: its readiness file (`LLADA_WORKER_READY_FILE`) is fresh: Celery consumes and the model is loaded,
  and the worker is not draining;
- reaper: its pass file (`LLADA_REAPER_PASS_FILE`) is fresh and says the last pass succeeded;
- webhooks: the dispatcher's pass file (`LLADA_WEBHOOK_PASS_FILE`) likewise;
- http: the front door's `/readyz` on `LLADA_HTTP_LISTEN` answers 200 (it does while the gateway it calls
  answers SERVING).

Exit status 0 when healthy, 1 when not, with one line saying why (Docker's HEALTHCHECK, compose and
Kubernetes exec probes read the status; `docker inspect` and `kubectl describe` show the line).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.health_file import judge, read_health_file
from shared.settings import Settings, get_settings

DEFAULT_TIMEOUT_S = 3.0
# A server listening on every address is asked on the loopback one.
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}


def local_target(listen: str) -> str:
    """Where a check inside the container reaches a server listening on `listen` (host:port)."""
    host, _, port = listen.rpartition(":")
    return f"{WILDCARD_HOSTS.get(host, host)}:{port}"


def check_gateway(settings: Settings, *, target: str | None, service: str, timeout_s: float,
                  ca_file: Path | None, server_name: str | None) -> tuple[bool, str]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = target or local_target(settings.grpc_listen)
    ca_file = ca_file or settings.tls_cert_file
    if ca_file is None:
        channel = grpc.insecure_channel(target)
    else:
        credentials = grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes())
        # The certificate names the public host, not the loopback address the check dials.
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(target, credentials, options=options)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                              timeout=timeout_s)
        except grpc.RpcError as e:
            return False, f"{target}: {e.code().name} {e.details() or ''}".rstrip()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return status == "SERVING", f"{target}{' (TLS)' if ca_file else ''}: {status}"


def check_http(settings: Settings, *, timeout_s: float) -> tuple[bool, str]:
    import urllib.error
    import urllib.request

    url = f"http://{local_target(settings.http_listen)}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return reply.status == 200, f"{url}: {reply.status}"
    except urllib.error.HTTPError as err:
        return False, f"{url}: {err.code} {err.read().decode(errors='replace')[:200]}"
    except OSError as err:
        return False, f"{url}: {err}"


def check_file(path: Path | None, variable: str) -> tuple[bool, str]:
    if path is None:
        return False, f"{variable} is not set: this process keeps no health file"
    healthy, why = judge(read_health_file(path))
    return healthy, f"{path}: {why}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llada-healthcheck", description=__doc__.splitlines()[0])
    roles = parser.add_subparsers(dest="role", required=True, metavar="{gateway,worker,reaper,webhooks,http}")
    gateway = roles.add_parser("gateway", help="gRPC health on LLADA_GRPC_LISTEN")
    gateway.add_argument("--target", help="host:port to ask instead of the one LLADA_GRPC_LISTEN gives")
    gateway.add_argument("--service", default="", help="service name to ask about ('' = the whole server)")
    gateway.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the answer")
    gateway.add_argument("--ca-file", type=Path, help="PEM CA that issued the gateway's certificate "
                         "(default: LLADA_TLS_CERT_FILE itself, as for a self-signed one); implies TLS")
    gateway.add_argument("--server-name", help="name the certificate is issued for, when it does not "
                         "name the address dialled")
    roles.add_parser("worker", help="the worker consumes with its model loaded (LLADA_WORKER_READY_FILE)")
    roles.add_parser("reaper", help="the reaper's last pass is recent and succeeded (LLADA_REAPER_PASS_FILE)")
    roles.add_parser("webhooks", help="the webhook dispatcher's last pass is recent and succeeded "
                     "(LLADA_WEBHOOK_PASS_FILE)")
    http = roles.add_parser("http", help="the HTTP front door's /readyz on LLADA_HTTP_LISTEN answers 200")
    http.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.role == "gateway":
        healthy, why = check_gateway(settings, target=args.target, service=args.service, timeout_s=args.timeout,
                                     ca_file=args.ca_file, server_name=args.server_name)
    elif args.role == "worker":
        healthy, why = check_file(settings.worker_ready_file, "LLADA_WORKER_READY_FILE")
    elif args.role == "reaper":
        healthy, why = check_file(settings.reaper_pass_file, "LLADA_REAPER_PASS_FILE")
    elif args.role == "webhooks":
        healthy, why = check_file(settings.webhook_pass_file, "LLADA_WEBHOOK_PASS_FILE")
    else:
        healthy, why = check_http(settings, timeout_s=args.timeout)
    print(f"{args.role} {'healthy' if healthy else 'unhealthy'}: {why}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
