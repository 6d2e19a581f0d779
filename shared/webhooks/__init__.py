"""Signed webhooks (issue 14): the submit's subscription (`subscription`), the Standard Webhooks signature
(`signing`), each tenant's signing secrets (`secrets`), the outbox written with each state change (`outbox`) and
a dispatcher's claims on it (`deliveries`). The dispatcher itself is services.webhooks."""
