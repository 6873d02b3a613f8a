"""The archive: index images into a database (SQLite or PostgreSQL), search, browse and correct them
through a REST API and a web page (needs the ``[archive]`` extra)."""
