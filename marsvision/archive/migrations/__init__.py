"""Alembic migrations of the archive's schema (``archive.db.upgrade`` applies them)."""
