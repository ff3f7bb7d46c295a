"""``foldline schema dump|check``: exit 0 when compatible, 1 naming each incompatible change, 2 on bad input
(one line on stderr, never a traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from foldline.cli import main

MODULE = """
from dataclasses import dataclass
from foldline import Aggregate, Policy


@dataclass(frozen=True)
class Add:
    amount: int


@dataclass(frozen=True)
class Added:
    amount: {amount}


@dataclass(frozen=True)
class State:
    count: int = 0


class Things(Aggregate[State]):
    name = "things"
    state_type = State
    commands = (Add,)
    events = (Added,)


@dataclass(frozen=True)
class Memo:
    seen: int = 0


class Watch(Policy[Memo]):
    name = "watch"
    sources = (Things,)
    targets = ()
    state_type = Memo
"""


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Importable modules, uniquely named per test: ``same`` and ``changed`` (Added.amount: int -> str),
    ``widened`` (int -> int | None), ``broken`` (raises on import), ``empty``."""
    monkeypatch.syspath_prepend(str(tmp_path))
    prefix = f"schema_cli_{uuid.uuid4().hex[:8]}"
    sources = {
        "same": MODULE.format(amount="int"),
        "changed": MODULE.format(amount="str"),
        "widened": MODULE.format(amount="int | None"),
        "broken": "raise RuntimeError('boom at import')\n",
        "empty": "X = 1\n",
    }
    names = {}
    for key, text in sources.items():
        (tmp_path / f"{prefix}_{key}.py").write_text(text)
        names[key] = f"{prefix}_{key}"
    return names


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["schema", *argv])
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def dump(capsys: pytest.CaptureFixture[str], path: Path, module: str, *extra: str) -> tuple[int, str, str]:
    return run(
        capsys, "dump", "--file", str(path), "--aggregate", f"{module}:Things", "--policy", f"{module}:Watch", *extra
    )


def test_dump_then_check_passes_and_check_reads_the_targets_from_the_file(
    tmp_path: Path, modules: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "schema.json"
    code, out, _ = dump(capsys, path, modules["same"])
    assert code == 0 and "wrote" in out
    recorded = json.loads(path.read_text())
    assert recorded["aggregates"]["things"]["import"] == f"{modules['same']}:Things"
    assert recorded["policies"]["watch"]["state"]["fields"] == {"seen": {"required": False, "type": "integer"}}
    assert run(capsys, "check", "--file", str(path))[0] == 0
    code, out, _ = run(capsys, "dump", "--file", str(path))  # again, from the file's own list
    assert code == 0 and "unchanged" in out


def test_an_incompatible_change_exits_1_naming_the_type_and_field(
    tmp_path: Path, modules: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "schema.json"
    dump(capsys, path, modules["same"])
    code, _, err = run(
        capsys,
        "check",
        "--file",
        str(path),
        "--aggregate",
        f"{modules['changed']}:Things",
        "--policy",
        f"{modules['changed']}:Watch",
    )
    assert code == 1
    assert "incompatible: things event Added: field amount: type changed from integer to string" in err
    assert "1 incompatible change(s)" in err


def test_a_compatible_change_exits_0_and_says_what_to_record(
    tmp_path: Path, modules: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "schema.json"
    dump(capsys, path, modules["same"])
    w = modules["widened"]
    code, out, _ = run(capsys, "check", "--file", str(path), "--aggregate", f"{w}:Things", "--policy", f"{w}:Watch")
    assert code == 0
    assert "things event Added: compatible field changes" in out
    assert "foldline schema dump" in out


def test_dump_refuses_to_record_an_incompatible_change_unless_forced(
    tmp_path: Path, modules: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "schema.json"
    dump(capsys, path, modules["same"])
    before = path.read_text()
    code, _, err = dump(capsys, path, modules["changed"])
    assert code == 1 and "not written" in err and "field amount" in err
    assert path.read_text() == before
    assert dump(capsys, path, modules["changed"], "--force")[0] == 0
    assert '"amount": {"required": true, "type": "string"}' in path.read_text()


@pytest.mark.parametrize(
    ("setup", "argv", "message"),
    [
        (None, ["check", "--file", "{dir}/missing.json"], "no such schema file"),
        ("{", ["check", "--file", "{dir}/schema.json"], "not JSON"),
        ('{"foldline_schema": 1}', ["check", "--file", "{dir}/schema.json"], "missing aggregates, policies"),
        ("[]", ["check", "--file", "{dir}/schema.json"], "expected an object, got list"),
        ("same", ["check", "--file", "{dir}/schema.json", "--aggregate", "no_such_module_x:Things"], "cannot import"),
        ("same", ["check", "--file", "{dir}/schema.json", "--aggregate", "{broken}:Things"], "boom at import"),
        ("same", ["check", "--file", "{dir}/schema.json", "--aggregate", "{empty}:Things"], "has no attribute"),
        ("same", ["check", "--file", "{dir}/schema.json", "--aggregate", "{empty}:X"], "is not a foldline Aggregate"),
        ("same", ["check", "--file", "{dir}/schema.json", "--aggregate", "no-colon"], "expected an import path"),
        (None, ["dump", "--file", "{dir}/new.json"], "name what to dump"),
    ],
    ids=["missing", "unparsable", "shape", "not-object", "no-module", "raises", "no-attr", "not-agg", "path", "dump"],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path,
    modules: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    setup: str | None,
    argv: list[str],
    message: str,
) -> None:
    path = tmp_path / "schema.json"
    if setup == "same":
        dump(capsys, path, modules["same"])
    elif setup is not None:
        path.write_text(setup)
    args = [a.format(dir=tmp_path, **modules) for a in argv]
    code, _, err = run(capsys, *args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "check", "--bogus")[0] == 2
    assert run(capsys)[0] == 2


def test_the_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "foldline.cli", "schema", "check", "--file", str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("foldline: ConfigurationError:")
    assert "Traceback" not in proc.stderr


def test_each_option_replaces_only_its_own_list(
    tmp_path: Path, modules: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "schema.json"
    dump(capsys, path, modules["same"])
    # --aggregate only: the policies still come from the file, so nothing is reported removed
    assert run(capsys, "check", "--file", str(path), "--aggregate", f"{modules['same']}:Things")[0] == 0
    code, _, err = run(capsys, "check", "--file", str(path), "--policy", f"{modules['same']}:Watch", "--aggregate")
    assert code == 2  # --aggregate needs a value: a usage error
    recorded = json.loads(path.read_text())
    recorded["policies"]["watch"]["import"] = None
    path.write_text(json.dumps(recorded))
    code, _, err = run(capsys, "check", "--file", str(path))
    assert code == 2 and "policies.watch has no import path" in err and "--policy" in err
    assert run(capsys, "check", "--file", str(path), "--policy", f"{modules['same']}:Watch")[0] == 0
