"""Notebook validation runs nbval in a child pytest, one lesson per test (see test_notebooks.py)."""
