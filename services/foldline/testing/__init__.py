"""Contract suites a third-party store or projection target reuses, as eventsourcing's test cases are.

``StateStoreContract`` (a command handler's local store) and ``ProjectionStoreContract`` (a projection
database) are base classes of pytest cases: subclass one as ``Test...``, say how to open your store, and
pytest runs every case of the contract against it. foldline's own stores and targets pass them in
``tests/contract``. ``assert_schema_compatible`` is the schema gate as one test (``foldline schema check``).
Importing this package needs pytest (``pip install foldline[testing]``).
"""

from foldline.testing.projection_stores import ProjectionStoreContract
from foldline.testing.schemas import assert_schema_compatible
from foldline.testing.state_stores import StateStoreContract

__all__ = ["ProjectionStoreContract", "StateStoreContract", "assert_schema_compatible"]
