"""The ``llada`` command: submit and manage jobs on a llada-serve gateway.

    llada submit t2i "a red fox in the snow" --width 512 --height 512 --wait -o fox.png
    llada submit understand photo.jpg "What is in this picture?" --wait
    llada submit edit photo.jpg "make it night" --wait -o night/
    llada get|watch|cancel|delete|fetch JOB_ID      llada list [--state queued] [--all]

``--server`` / ``--api-key`` default to $LLADA_SERVER / $LLADA_API_KEY. ``llada run ...`` (the model
runtime's own command), ``llada up|down|status`` (the embedded stack) and ``llada keys create|list|revoke``
(the gateway's admin command) are handed to modules that are imported only when asked for.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys

from client.connection import resolve_target
from client.errors import LladaError

# Commands handed to other parts of the project: module, and whether the command word is passed on.
DELEGATED = {
    "run": ("workers.model.cli", False),
    "up": ("workers.embedded", True),
    "down": ("workers.embedded", True),
    "status": ("workers.embedded", True),
    "keys": ("services.gateway.admin", False),
}

# "llada keys WORD": the admin command each word stands for.
KEYS_COMMANDS = {"create": "create-key", "list": "list-keys", "revoke": "revoke-key"}

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _delegate(command: str, rest: list[str]) -> int:
    module_name, keep_command = DELEGATED[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or module_name
        print(f"llada {command}: not available in this installation ({module_name} could not be imported: "
              f"no module named {missing!r})", file=sys.stderr)
        return EXIT_USAGE
    main = getattr(module, "main", None)
    if main is None:
        print(f"llada {command}: {module_name} has no main()", file=sys.stderr)
        return EXIT_USAGE
    argv = [command, *rest] if keep_command else rest
    if command == "keys":
        # "llada keys create --tenant T" == "python -m services.gateway.admin create-key --tenant T"
        argv = [KEYS_COMMANDS.get(rest[0], rest[0]), *rest[1:]] if rest else rest
    if inspect.signature(main).parameters:
        result = main(argv)
    else:
        saved = sys.argv
        sys.argv = [f"llada {command}", *argv]
        try:
            result = main()
        finally:
            sys.argv = saved
    return int(result or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        return _delegate(argv[0], argv[1:])

    from client.cli_commands import build_parser  # the SDK part; kept out of the delegation path

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
