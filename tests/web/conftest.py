"""The web tests stand on the archive's fixtures: an empty database per test (SQLite, and PostgreSQL when
slow tests run) and a folder of broken images."""

from archive.conftest import broken_images, db_url  # noqa: F401 (fixtures, used by name)
