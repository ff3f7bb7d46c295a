"""Fixtures of the image tests: the foldline image and the team example image, built by install."""

from __future__ import annotations

import pytest

from tests.image.support import BuiltImage, built_image


@pytest.fixture(scope="session")
def foldline_image() -> BuiltImage:
    try:
        return built_image("foldline")
    except AssertionError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def accounts_image() -> BuiltImage:
    try:
        return built_image("foldline-example-accounts")
    except AssertionError as exc:
        pytest.fail(str(exc), pytrace=False)
