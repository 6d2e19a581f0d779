"""LLaDA2.0-Uni model runtime: a pure-PyTorch library (no Celery, Ray, gRPC or databases)."""
