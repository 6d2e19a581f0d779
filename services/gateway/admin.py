"""Operator commands for API keys and webhook signing secrets.

``create-key --tenant T`` prints a new key (only its hash is stored, so this is the one time it is shown);
``list-keys`` shows each key's id, tenant and prefix; ``revoke-key`` takes that id or prefix — never the key
itself, which on a command line every user of the machine could read in ``ps``.

``webhook-secret-create --tenant T`` prints the tenant's first signing secret (``whsec_…``);
``webhook-secret-rotate`` prints a new one that signs beside the old until ``webhook-secret-retire`` (give
the receiver the new secret in between); ``webhook-secrets`` lists them by their first characters."""

from __future__ import annotations

import argparse
import sys

from shared.db import make_engine, session_factory
from shared.jobs import InvalidArgument
from shared.repository import API_KEY_PREFIX_CHARS, create_api_key, list_api_keys, revoke_api_key
# A command reads the environment as it is now, not a process-wide cached copy.
from shared.settings import Settings
from shared.webhooks import secrets as webhook_secrets


def _sessions(database_url: str | None):
    return session_factory(make_engine(database_url or Settings().database_url))


def _time(value) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else "-"


def _print_keys(keys) -> None:
    print(f"{'ID':>6}  {'PREFIX':{API_KEY_PREFIX_CHARS}}  {'CREATED':20}  {'REVOKED':20}  TENANT")
    for key in keys:
        print(f"{key.id:>6}  {key.key_prefix:{API_KEY_PREFIX_CHARS}}  {_time(key.created_at):20}  "
              f"{_time(key.revoked_at):20}  {key.tenant}")


def _webhook_secrets(s, args) -> int:
    if args.command == "webhook-secrets":
        print(f"{'ID':>6}  {'SECRET':13}  {'CREATED':20}  {'RETIRED':20}  TENANT")
        for row in webhook_secrets.list_secrets(s, args.tenant):
            print(f"{row.id:>6}  {webhook_secrets.shown(row.secret):13}  {_time(row.created_at):20}  "
                  f"{_time(row.retired_at):20}  {row.tenant}")
    elif args.command == "webhook-secret-retire":
        retired = webhook_secrets.retire_old_secrets(s, args.tenant)
        print(f"retired {retired} older secret(s) of tenant {args.tenant}; the newest alone signs now")
    else:
        make = {"webhook-secret-create": webhook_secrets.create_secret,
                "webhook-secret-rotate": webhook_secrets.rotate_secret}[args.command]
        print(make(s, args.tenant))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway.admin", description="API keys: create, "
                                     "list and revoke them. Only a key's hash and first characters are stored. "
                                     "Webhook signing secrets: create, rotate, retire, list.")
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
    for name, text in (("webhook-secret-create", "create a tenant's first webhook signing secret and print it"),
                       ("webhook-secret-rotate", "print a new signing secret; the old one signs too until retired"),
                       ("webhook-secret-retire", "retire every signing secret of the tenant but the newest")):
        commands.add_parser(name, parents=[common], help=text).add_argument("--tenant", required=True)
    secrets_list = commands.add_parser("webhook-secrets", parents=[common],
                                       help="list signing secrets: id, first characters, times, tenant")
    secrets_list.add_argument("--tenant", help="only this tenant's secrets")
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
            if args.command.startswith("webhook-secret"):
                return _webhook_secrets(s, args)
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
