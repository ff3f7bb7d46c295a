import foldline


def test_all_is_exact_and_sorted():
    exported = foldline.__all__
    assert len(exported) == len(set(exported))
    for name in exported:
        assert hasattr(foldline, name), name
    public = {n for n in vars(foldline) if not n.startswith("_") and n not in {"annotations"}}
    modules = {n for n in public if type(getattr(foldline, n)).__name__ == "module"}
    assert public - modules == set(exported) - {"__version__"}


def test_errors_have_one_root_grouped_by_what_to_do():
    from foldline import errors

    for name in dir(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj is not foldline.FoldlineError:
            assert issubclass(obj, foldline.FoldlineError), name
            if obj not in (foldline.RetryableError, foldline.CommandError, foldline.PermanentError):
                groups = (foldline.RetryableError, foldline.CommandError, foldline.PermanentError)
                assert issubclass(obj, groups), f"{name} is in no group"
