"""jobs.handed_back: attempts a worker returned unfinished (draining on shutdown, or unable to load the model)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        # Not counted against max_attempts: a hand-back is routine (a scale-down), not a failure.
        batch.add_column(sa.Column("handed_back", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("handed_back")
