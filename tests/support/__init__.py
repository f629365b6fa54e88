"""Helpers the test modules share, one module per thing provided.

Test modules (``test_*.py``) never import each other: what two of them need
lives here (or, for fixtures, in ``tests/conftest.py``).
"""
