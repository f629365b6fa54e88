"""pytest plugin: a running emulator and an official client aimed at it.

Enabled with ``pytest_plugins = ["sync.emulator.fixtures"]`` in a
``conftest.py``. One server runs per test module (starting one costs a few
milliseconds, but a module is a natural unit for settings such as the
clock); every test gets it freshly reset, and fails if the emulator itself
hit a bug while answering.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sync.emulator.server import Emulator


@pytest.fixture(scope="module")
def mailchimp_emulator_server() -> Iterator[Emulator]:
    """The module's emulator, started on a free port of 127.0.0.1."""
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def mailchimp_emulator(mailchimp_emulator_server: Emulator) -> Iterator[Emulator]:
    """A freshly reset emulator: empty audience, no faults, no recorded calls."""
    emulator = mailchimp_emulator_server
    emulator.reset()
    yield emulator
    errors = list(emulator.errors)
    emulator.reset()
    if errors:
        pytest.fail("the emulator failed while answering:\n" + "\n".join(errors))


@pytest.fixture
def mailchimp_client(mailchimp_emulator: Emulator) -> Any:
    """An official ``mailchimp_marketing.Client`` pointed at ``mailchimp_emulator``.

    Its timeout is 5 s rather than the client's 120 s, so that a test that
    hangs says so quickly.
    """
    return mailchimp_emulator.client(timeout=5.0)
