"""Each tenant's webhook signing secrets: created, rotated and retired by the operator (`llada-server
webhook-secret …`), shown once. Every unretired secret signs (newest first), so a rotation is: `rotate` (the new
secret signs beside the old), give the new one to the receiver, then `retire` (only the newest signs).

Functions take a `Session` and end their transaction before returning, like shared.repository's.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.db.models import WebhookSecret
from shared.db.types import utcnow
from shared.jobs import InvalidArgument
from shared.repository import check_tenant
from shared.webhooks.signing import new_secret

SHOWN_CHARS = 12  # of a secret, in listings: enough to tell two apart, far too few to sign with


def signing_secrets(s: Session, tenant: str) -> list[str]:
    """The tenant's unretired secrets, newest first (empty: the tenant has none, so nothing can be signed)."""
    rows = s.scalars(select(WebhookSecret.secret).where(WebhookSecret.tenant == tenant,
                                                        WebhookSecret.retired_at.is_(None))
                     .order_by(WebhookSecret.id.desc())).all()
    s.commit()
    return list(rows)


def create_secret(s: Session, tenant: str) -> str:
    """The tenant's first secret; refused if it has one (rotate instead, so no receiver is cut off)."""
    check_tenant(tenant)
    if signing_secrets(s, tenant):
        raise InvalidArgument("tenant", f"{tenant!r} already has a signing secret; rotate it instead")
    return _add(s, tenant)


def rotate_secret(s: Session, tenant: str) -> str:
    """A new secret that signs beside the current ones until `retire_old_secrets`."""
    check_tenant(tenant)
    if not signing_secrets(s, tenant):
        raise InvalidArgument("tenant", f"{tenant!r} has no signing secret to rotate; create one")
    return _add(s, tenant)


def retire_old_secrets(s: Session, tenant: str) -> int:
    """Retire every secret of the tenant but the newest; returns how many were retired."""
    newest = s.scalar(select(WebhookSecret.id).where(WebhookSecret.tenant == tenant,
                                                     WebhookSecret.retired_at.is_(None))
                      .order_by(WebhookSecret.id.desc()).limit(1))
    if newest is None:
        s.commit()
        raise InvalidArgument("tenant", f"{tenant!r} has no signing secret")
    result = s.execute(update(WebhookSecret).where(WebhookSecret.tenant == tenant, WebhookSecret.id != newest,
                                                   WebhookSecret.retired_at.is_(None))
                       .values(retired_at=utcnow()))
    s.commit()
    return result.rowcount


def list_secrets(s: Session, tenant: str | None = None) -> list[WebhookSecret]:
    """Every secret (retired ones too), oldest first; callers show `shown(secret)`, never the whole secret."""
    query = select(WebhookSecret).order_by(WebhookSecret.id)
    if tenant is not None:
        query = query.where(WebhookSecret.tenant == tenant)
    rows = list(s.scalars(query))
    s.commit()
    return rows


def shown(secret: str) -> str:
    return secret[:SHOWN_CHARS] + "…"


def _add(s: Session, tenant: str) -> str:
    secret = new_secret()
    s.add(WebhookSecret(tenant=tenant, secret=secret))
    s.commit()
    return secret
