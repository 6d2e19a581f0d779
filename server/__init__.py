"""The server side's commands: `llada-server` (server.cli) and the embedded stack's supervisor (server.embedded).

Above every process of the service (gateway, worker, reaper, migrations, keys); nothing imports this package
back, and the job client (`client/`, the `llada` command) never does.
"""
