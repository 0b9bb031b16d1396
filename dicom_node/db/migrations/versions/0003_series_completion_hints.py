"""series completion hints

What the sender told the node about a series being whole: the end of the association that
brought it (``series.released_at``, ``series.released_instances``) and the ImagesInAcquisition
of each instance (``instances.images_in_acquisition``).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("series") as batch_op:
        batch_op.add_column(sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("released_instances", sa.Integer(), nullable=True))
    with op.batch_alter_table("instances") as batch_op:
        batch_op.add_column(sa.Column("images_in_acquisition", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch_op:
        batch_op.drop_column("images_in_acquisition")
    with op.batch_alter_table("series") as batch_op:
        batch_op.drop_column("released_instances")
        batch_op.drop_column("released_at")
