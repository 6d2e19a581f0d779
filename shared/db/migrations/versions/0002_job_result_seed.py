"""jobs.result_seed: the seed an image job ran with (drawn by the model when the request had none)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite rebuilds the table where it cannot ALTER (the drop below); Postgres alters in place.
    with op.batch_alter_table("jobs") as batch:
        # Seeds are in [0, 2**63): a 64-bit integer. Nullable: jobs without an image, and older jobs.
        batch.add_column(sa.Column("result_seed", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("result_seed")
