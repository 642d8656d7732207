"""The embedded local stack: a Tansu broker and a PostgreSQL server from PyPI wheels."""
