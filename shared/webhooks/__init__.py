"""Signed webhooks (issue 14): the Standard Webhooks signature (`signing`) and each tenant's signing secrets
(`secrets`). Delivery (the outbox and its dispatcher) builds on these."""
