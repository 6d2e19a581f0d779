"""Python SDK for llada-serve (sync and asyncio) and the ``llada`` command.

    from client import LladaClient
    with LladaClient("127.0.0.1:50051", api_key="...") as llada:
        job = llada.submit_text_to_image("a red fox in the snow", width=512, height=512)
        done = llada.wait(job.id, progress=lambda j: print(state_name(j), j.progress.step))
        llada.download(done, "out/")

The SDK depends only on grpc and the generated stubs in ``shared.proto``. A webhook receiver checks each
request with ``verify_webhook(secret, headers, body)``.
"""

from client.async_client import AsyncLladaClient
from client.errors import LladaError
from client.jobs import is_terminal, kind_name, stage_name, state_name
from client.sync_client import JobPage, LladaClient
from client.webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "AsyncLladaClient", "JobPage", "LladaClient", "LladaError", "WebhookVerificationError",
    "is_terminal", "kind_name", "stage_name", "state_name", "verify_webhook",
]
