"""Shared fixtures. PostgreSQL fixtures live in ``tests/pg.py`` once the
database side exists; under ``CI=true`` they must never be skipped."""
