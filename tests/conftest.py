"""Loaded for every test. The test folders are packages: helpers import by package (`tests.postgres_databases`,
`tests.workers.executor_doubles`), with the repository root on sys.path."""
