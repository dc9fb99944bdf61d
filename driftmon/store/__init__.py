"""The results database: SQLAlchemy models, migrations and the one repository."""
