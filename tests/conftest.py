"""Loaded for every test: pytest puts this folder on sys.path, so helpers shared by all test folders
(`postgres_databases`) import by name."""
