import anyio
import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_anyio_sleep():
    with anyio.fail_after(1):
        await anyio.sleep(0.05)
