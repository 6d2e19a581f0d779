"""The webhook dispatcher (issue 14): delivers the outbox that state changes write (shared.webhooks.outbox)."""
