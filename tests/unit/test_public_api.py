"""The public API: every package's ``__all__`` is exact (ruff's RUF022 keeps it sorted), every error sits in
one group and is exported."""

import importlib
import inspect

import pytest

import foldline
from foldline.errors import CommandError, FoldlineError, PermanentError, RetryableError

PACKAGES = [
    "foldline",
    "foldline.gateway",
    "foldline.handler",
    "foldline.policy",
    "foldline.projection",
    "foldline.schema",
    "foldline.store",
]
#: Each module of errors, and the package that exports them.
ERROR_MODULES = {
    "foldline.errors": "foldline",
    "foldline.projection.errors": "foldline.projection",
    "foldline.gateway.errors": "foldline.gateway",
}
GROUPS = (RetryableError, CommandError, PermanentError)


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_exact(name):
    package = importlib.import_module(name)
    exported = package.__all__
    assert len(exported) == len(set(exported))
    for item in exported:
        assert hasattr(package, item), item
    public = {
        n for n, v in vars(package).items() if not n.startswith("_") and n != "annotations" and not inspect.ismodule(v)
    }
    assert public == set(exported) - {"__version__"}


def errors_of(module_name):
    module = importlib.import_module(module_name)
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == module_name
    ]


@pytest.mark.parametrize("module_name", sorted(ERROR_MODULES))
def test_every_error_is_in_exactly_one_group_and_exported(module_name):
    package = importlib.import_module(ERROR_MODULES[module_name])
    found = errors_of(module_name)
    assert found
    for error in found:
        assert issubclass(error, FoldlineError), error
        assert error.__name__ in package.__all__, f"{error.__name__} is not exported by {package.__name__}"
        if error in (FoldlineError, *GROUPS):
            continue
        groups = [g for g in GROUPS if issubclass(error, g)]
        # HttpError is the base of the gateway's errors; each one it raises is in a group.
        if error.__name__ == "HttpError":
            assert not groups and all(
                len([g for g in GROUPS if issubclass(sub, g)]) == 1 for sub in error.__subclasses__()
            )
            continue
        assert len(groups) == 1, f"{error.__name__} is in {groups or 'no group'}"


def test_the_root_package_reexports_the_record_vocabulary():
    from foldline import records

    assert foldline.Status is records.Status and [s.value for s in foldline.Status] == [
        "accepted",
        "rejected",
        "conflict",
        "failed",
    ]
    assert foldline.CommandResult is records.CommandResult
