"""webhook_secrets: each tenant's webhook signing secrets (several sign during a rotation)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from shared.db.types import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_secrets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("retired_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_webhook_secrets_tenant", "webhook_secrets", ["tenant"])


def downgrade() -> None:
    op.drop_index("ix_webhook_secrets_tenant", table_name="webhook_secrets")
    op.drop_table("webhook_secrets")
