import asyncio

import pytest


# The project's own loop hook, as aiostream's and aiosmtplib's suites have.
def pytest_asyncio_loop_factories(config, item):
    return {"asyncio": asyncio.new_event_loop}


# Fixture names a project may well pick (watchdog is a file-events library).
@pytest.fixture
def watchdog():
    return "file observer"


@pytest.fixture
def task_tracker():
    return []


@pytest.fixture
def virtual_clock():
    return "wall clock"
