"""Alembic environment: the URL comes from the caller (dicom_node.db.migrate) or DICOM_NODE settings."""

from alembic import context

from dicom_node.db.models import Base
from dicom_node.db.session import make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url")
if not url:
    from dicom_node.config import load_settings

    url = load_settings().resolved_database_url


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
