"""``assert_schema_compatible``: the schema gate as one test in a team's suite.

    def test_events_stay_readable():
        assert_schema_compatible(Path(__file__).parent.parent / "foldline-schema.json")

It checks the aggregates and policies the file was dumped from (or the ones given) against the file, as
``foldline schema check`` does, and fails naming each incompatible type and field.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from foldline.schema.files import Target, check_schema_file


def assert_schema_compatible(
    schema_file: str | os.PathLike[str],
    *,
    aggregates: Sequence[Target] | None = None,
    policies: Sequence[Target] | None = None,
) -> None:
    """Raise ``AssertionError`` listing every incompatible change of the code against ``schema_file``.

    ``aggregates`` and ``policies`` (import paths, classes or instances) replace the ones the file lists;
    a missing or unreadable file raises ``ConfigurationError``, an unimportable target
    ``AggregateDefinitionError``.
    """
    comparison = check_schema_file(schema_file, aggregates, policies)
    if comparison.problems:
        lines = "\n".join(f"  {problem}" for problem in comparison.problems)
        raise AssertionError(f"the code changed incompatibly against {os.fspath(schema_file)}:\n{lines}")
