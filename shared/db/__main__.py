"""`python -m shared.db upgrade|current|revision|recount [--url URL]`: the jobs database (default:
LLADA_DATABASE_URL)."""

from __future__ import annotations

import argparse
import sys

from shared.db.engine import make_engine, session_factory
from shared.db.migrate import current_revision, new_revision, upgrade
from shared.queue_counts import recount_queue
from shared.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.db", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "upgrade": "apply all migrations",
        "current": "print the applied revision",
        "revision": "autogenerate a new migration from the models (database must be at head)",
        "recount": "rebuild the queue counts and tickets from the jobs (after writes made with triggers off)",
    }
    for name, help_text in commands.items():
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--url", help="database URL (default: LLADA_DATABASE_URL or the embedded SQLite file)")
        if name == "revision":
            cmd.add_argument("-m", "--message", required=True)
    args = parser.parse_args(argv)
    url = args.url or Settings().database_url
    if args.command == "upgrade":
        upgrade(url)
        print(f"database at revision {current_revision(url)}")
    elif args.command == "revision":
        new_revision(url, args.message)
    elif args.command == "recount":
        engine = make_engine(url)
        try:
            with session_factory(engine)() as s:
                found = recount_queue(s)
        finally:
            engine.dispose()
        print(f"{found['queued']} queued and {found['active']} running jobs counted; "
              f"{found['ticketed']} queued jobs given a ticket")
    else:
        print(current_revision(url) or "(empty)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
