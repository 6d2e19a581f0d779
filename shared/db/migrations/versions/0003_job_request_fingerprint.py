"""jobs.request_fingerprint: what a submit asked for, so a reused request_id with other parameters is refused

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        # A SHA-256 hex digest (shared.idempotency.request_fingerprint). Nullable: jobs submitted before
        # this revision have none, and a retry of one of them is answered as before, without comparing.
        batch.add_column(sa.Column("request_fingerprint", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("request_fingerprint")
