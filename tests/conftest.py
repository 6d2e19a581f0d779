"""Loaded for every test. The test folders are packages: helpers import by package (`tests.postgres_databases`,
`tests.workers.executor_doubles`), with the repository root on sys.path."""

import logging
import os
import signal

import pytest

# Under mutmut (scripts/mutants.sh), each planted bug is judged by the tests of its own package: a bug in
# shared/ must be caught by tests/shared, not only by a gateway test three layers above it. This also keeps a
# surviving mutant from running every test that happens to pass through its function.
MUTANT_HOME_TESTS = {
    "shared.": "tests/shared/",
    "services.gateway.": "tests/gateway/",
    "services.http.": "tests/http/",
    "services.webhooks.": "tests/webhooks/",
    "workers.": "tests/workers/",
    "client.": "tests/client/",
}


def pytest_collection_modifyitems(config, items):
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if "__mutmut_" not in mutant:
        return
    home = next((folder for package, folder in MUTANT_HOME_TESTS.items() if mutant.startswith(package)), None)
    if home is None:
        return
    kept = [item for item in items if item.nodeid.startswith(home)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


@pytest.fixture
def spans():
    """The spans this process records while the test runs, through the OpenTelemetry SDK's in-memory exporter."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from shared import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.install(None)


@pytest.fixture
def process_state():
    """For tests that run a command's `main()` in this process: it sets up logging and signal handlers as a
    process of its own would, and reads the settings once (cached); all three are put back afterwards."""
    from shared.settings import get_settings

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    handlers_by_signal = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
    root.handlers[:] = handlers
    root.setLevel(level)
    for signum, handler in handlers_by_signal.items():
        signal.signal(signum, handler)
