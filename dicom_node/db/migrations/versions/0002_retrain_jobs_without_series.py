"""retrain jobs without a series

A retraining round is a job of kind ``retrain`` that belongs to no series.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.alter_column("series_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM job_events WHERE job_id IN (SELECT id FROM jobs WHERE series_id IS NULL)")
    op.execute("DELETE FROM jobs WHERE series_id IS NULL")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.alter_column("series_id", existing_type=sa.Integer(), nullable=False)
