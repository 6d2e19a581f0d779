"""The ``llada`` command: submit and manage jobs on a llada-serve gateway.

    llada submit t2i "a red fox in the snow" --width 512 --height 512 --wait -o fox.png
    llada submit understand photo.jpg "What is in this picture?" --wait
    llada submit edit photo.jpg "make it night" --wait -o night/
    llada get|watch|cancel|delete|fetch JOB_ID      llada list [--state queued] [--all]

``--server`` / ``--api-key`` default to $LLADA_SERVER / $LLADA_API_KEY. This command is only a client of the
gateway's job API (the generated stubs through the SDK); running the service itself — the embedded stack, the
processes, migrations, keys, the model in-process — is `llada-server`'s.
"""

from __future__ import annotations

import sys

from client.connection import resolve_target
from client.errors import LladaError

# Words that name a server-side command: answered with where it lives, not imported.
SERVER_COMMANDS = frozenset({"up", "down", "status", "run", "keys", "gateway", "worker", "reaper", "webhooks", "http",
                             "migrate", "webhook-secret"})

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SERVER_COMMANDS:
        print(f"llada {argv[0]}: a server command; run `llada-server {' '.join(argv)}`", file=sys.stderr)
        return EXIT_USAGE

    from client.cli_commands import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args.server, args.api_key = resolve_target(args.server, args.api_key)
    try:
        return args.handler(args)
    except LladaError as err:
        field = f" (field: {err.field})" if err.field else ""
        print(f"error: {err.code}: {err.message}{field}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
