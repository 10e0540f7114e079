"""Notebook validation runs nbval in two child pytests, one per mode, over all selected lessons
(see test_notebooks.py); each lesson is still a test of its own."""
