"""Operator commands for API keys. ``create-key --tenant T`` prints a new key (only its hash is stored, so
this is the one time it is shown); ``list-keys`` shows each key's id, tenant and prefix; ``revoke-key``
takes that id or prefix — never the key itself, which on a command line every user of the machine could
read in ``ps``."""

from __future__ import annotations

import argparse
import sys

from shared.db import make_engine, session_factory
from shared.jobs import InvalidArgument
from shared.repository import API_KEY_PREFIX_CHARS, create_api_key, list_api_keys, revoke_api_key
# A command reads the environment as it is now, not a process-wide cached copy.
from shared.settings import Settings


def _sessions(database_url: str | None):
    return session_factory(make_engine(database_url or Settings().database_url))


def _time(value) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else "-"


def _print_keys(keys) -> None:
    print(f"{'ID':>6}  {'PREFIX':{API_KEY_PREFIX_CHARS}}  {'CREATED':20}  {'REVOKED':20}  TENANT")
    for key in keys:
        print(f"{key.id:>6}  {key.key_prefix:{API_KEY_PREFIX_CHARS}}  {_time(key.created_at):20}  "
              f"{_time(key.revoked_at):20}  {key.tenant}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway.admin", description="API keys: create, "
                                     "list and revoke them. Only a key's hash and first characters are stored.")
    # Accepted before and after the command; SUPPRESS keeps the command's default from hiding an earlier value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", default=argparse.SUPPRESS, help="default: LLADA_DATABASE_URL / the "
                        "embedded database")
    parser.add_argument("--database-url", help="default: LLADA_DATABASE_URL / the embedded database")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-key", parents=[common], help="create an API key for a tenant and print "
                                 "it (the only time it is shown)")
    create.add_argument("--tenant", required=True)
    listing = commands.add_parser("list-keys", parents=[common],
                                  help="list API keys: id, prefix, times, tenant (never the key)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    revoke = commands.add_parser(
        "revoke-key", parents=[common], help="revoke an API key by its id or prefix (as list-keys shows them)",
        description="Revokes one active key. Give its id or the start of its prefix as list-keys shows them; "
                    "a prefix that matches several active keys is refused. Never pass the key itself: "
                    "a command line is visible to every user of the machine.")
    revoke.add_argument("key", metavar="ID_OR_PREFIX")
    args = parser.parse_args(argv)
    sessions = _sessions(args.database_url)
    try:
        with sessions() as s:
            if args.command == "create-key":
                print(create_api_key(s, args.tenant))
                return 0
            if args.command == "list-keys":
                _print_keys(list_api_keys(s, args.tenant))
                return 0
            revoked = revoke_api_key(s, args.key)
            if revoked is None:
                print("error: no active key has this id or prefix (see list-keys)", file=sys.stderr)
                return 1
            print(f"revoked key {revoked.id} ({revoked.key_prefix}…) of tenant {revoked.tenant}")
            return 0
    except InvalidArgument as err:
        print(f"error: {err.field}: {err.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
