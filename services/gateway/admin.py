"""Operator commands. ``python -m services.gateway.admin create-key --tenant T`` prints a new API key
(only its hash is stored, so this is the one time it is shown)."""

from __future__ import annotations

import argparse
import sys

from shared.db import make_engine, session_factory
from shared.jobs import InvalidArgument
from shared.repository import create_api_key, revoke_api_key
# A command reads the environment as it is now, not a process-wide cached copy.
from shared.settings import Settings


def _sessions(database_url: str | None):
    return session_factory(make_engine(database_url or Settings().database_url))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway.admin", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="default: LLADA_DATABASE_URL / the embedded database")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-key", help="create an API key for a tenant and print it")
    create.add_argument("--tenant", required=True)
    revoke = commands.add_parser("revoke-key", help="revoke an API key")
    revoke.add_argument("key")
    args = parser.parse_args(argv)
    sessions = _sessions(args.database_url)
    try:
        with sessions() as s:
            if args.command == "create-key":
                print(create_api_key(s, args.tenant))
                return 0
            if not revoke_api_key(s, args.key):
                print("error: no such active key", file=sys.stderr)
                return 1
            print("revoked")
            return 0
    except InvalidArgument as err:
        print(f"error: {err.field}: {err.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
