"""The schema gate: the wire schema of an aggregate's commands, events and state (and a policy's state),
recorded in a committed file, and a check that the code can still read what that schema wrote.

``schema_of``, ``compare_schemas`` and ``probe_upcasters`` are pure; ``check_schema_file`` reads the file
and imports the code; ``foldline schema dump|check`` is the command line, ``foldline.testing.assert_schema_compatible``
the test. See docs/schemas.md.
"""

from foldline.schema.compat import Comparison, SchemaProblem, compare_schemas
from foldline.schema.files import (
    DEFAULT_FILE,
    check_schema_file,
    code_schema,
    compare_with_code,
    read_schema_file,
    write_schema_file,
)
from foldline.schema.samples import probe_upcasters
from foldline.schema.wire import render, schema_of

__all__ = [
    "DEFAULT_FILE",
    "Comparison",
    "SchemaProblem",
    "check_schema_file",
    "code_schema",
    "compare_schemas",
    "compare_with_code",
    "probe_upcasters",
    "read_schema_file",
    "render",
    "schema_of",
    "write_schema_file",
]
