"""`llada-server`: run llada-serve's own processes and its administration (the job API's client is `llada`).

    llada-server up | down | status           the embedded stack on this machine (server/embedded.py)
    llada-server gateway | worker | reaper | webhooks | http
                                              one process in the foreground, as deployed
    llada-server migrate                      upgrade the jobs database to the newest schema
    llada-server keys create --tenant T | list | revoke ID
    llada-server webhook-secret create|rotate|retire --tenant T | list
    llada-server run t2i|understand|edit …    the model in this process, no service (workers/model/cli.py)

Each command's own `--help` says the rest. Every one reads the `LLADA_*` settings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_USAGE = 2

# "llada-server keys WORD": the admin command each word stands for.
KEYS_COMMANDS = {"create": "create-key", "list": "list-keys", "revoke": "revoke-key"}
# The worker as deployed: pool and concurrency follow from the executor (workers.celery_app.worker_pool_for).
WORKER_COMMAND = ["-m", "celery", "-A", "workers.celery_app", "worker", "--prefetch-multiplier=1"]


def _stack(command: str) -> Callable[[list[str]], int]:
    def run(rest: list[str]) -> int:
        from server import embedded

        return embedded.main([command, *rest])
    return run


def _gateway(rest: list[str]) -> int:
    if rest:  # it has no options of its own: everything is a setting
        asked = rest in (["-h"], ["--help"])
        print("llada-server gateway: serves the job API on LLADA_GRPC_LISTEN; it takes no arguments, only the "
              "LLADA_* settings", file=sys.stdout if asked else sys.stderr)
        return 0 if asked else EXIT_USAGE
    from services.gateway.__main__ import main

    main()
    return 0


def _worker(rest: list[str]) -> int:
    os.execv(sys.executable, [sys.executable, *WORKER_COMMAND, *rest])  # Celery owns the process from here


def _reaper(rest: list[str]) -> int:
    from workers.reaper import main

    return main(rest)


def _webhooks(rest: list[str]) -> int:
    from services.webhooks.dispatcher import main

    return main(rest)


def _http(rest: list[str]) -> int:
    if rest:
        asked = rest in (["-h"], ["--help"])
        print("llada-server http: serves the HTTP front door (job API as JSON, OpenAI-compatible routes, the "
              "dashboard) on LLADA_HTTP_LISTEN, calling the gateway at LLADA_HTTP_GATEWAY; it takes no arguments, "
              "only the LLADA_* settings", file=sys.stdout if asked else sys.stderr)
        return 0 if asked else EXIT_USAGE
    from services.http.server import main

    main()
    return 0


def _migrate(rest: list[str]) -> int:
    from shared.db.__main__ import main

    return main(["upgrade", *rest])


def _keys(rest: list[str]) -> int:
    from services.gateway.admin import main

    return main([KEYS_COMMANDS.get(rest[0], rest[0]), *rest[1:]] if rest else ["--help"])


def _webhook_secret(rest: list[str]) -> int:
    from services.gateway.admin import main

    if not rest:
        return main(["--help"])
    command = "webhook-secrets" if rest[0] == "list" else f"webhook-secret-{rest[0]}"
    return main([command, *rest[1:]])


def _run(rest: list[str]) -> int:
    from workers.model.cli import main

    return main(rest)


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "up": (_stack("up"), "start the embedded stack (gateway, worker, reaper, webhooks, http) in the background"),
    "down": (_stack("down"), "stop the embedded stack"),
    "status": (_stack("status"), "show whether the embedded stack runs"),
    "gateway": (_gateway, "run the gRPC gateway (LLADA_GRPC_LISTEN)"),
    "worker": (_worker, "run a Celery worker; extra arguments go to `celery worker`"),
    "reaper": (_reaper, "run the reaper [--interval S] [--once]"),
    "webhooks": (_webhooks, "run the webhook dispatcher [--grace S]"),
    "http": (_http, "run the HTTP front door (LLADA_HTTP_LISTEN): JSON, OpenAI-compatible, the dashboard"),
    "migrate": (_migrate, "upgrade the jobs database [--url URL]"),
    "keys": (_keys, "API keys: create --tenant T | list | revoke ID"),
    "webhook-secret": (_webhook_secret, "webhook signing secrets: create | rotate | retire --tenant T, or list"),
    "run": (_run, "run the model in this process: t2i | understand | edit …"),
}


def usage() -> str:
    lines = ["usage: llada-server COMMAND [ARGS …]", "", __doc__.strip().split(": ", 1)[1], "", "commands:"]
    lines += [f"  {name:<15} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_USAGE
    if argv[0] not in COMMANDS:
        print(f"llada-server: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return EXIT_USAGE
    run, _ = COMMANDS[argv[0]]
    return int(run(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
