"""The gRPC gateway (``python -m services.gateway``): JobService plus health checking and reflection.

    server.py    the grpc.aio server: interceptors, limits, TLS, metrics endpoint, graceful shutdown
    servicer.py  the six RPCs; blocking work runs in threads
    auth.py      API key (metadata ``x-api-key``) -> tenant, per call
    convert.py   wire messages <-> params dicts and Job rows
    images.py    input-image checks before a job is accepted
    errors.py    shared-layer exceptions -> gRPC status codes, naming the refused field
    metrics.py   Prometheus: requests and latencies per method, jobs by state
    wiring.py    dependencies from Settings
    admin.py     ``python -m services.gateway.admin create-key --tenant T | list-keys | revoke-key ID``

Logs are JSON lines (shared.logs). It never imports torch or ``workers``; jobs reach the workers as a
Celery task sent by name.
"""
