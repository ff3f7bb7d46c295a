"""A team's image (examples/team-image): foldline's image plus the team's aggregate package."""

from __future__ import annotations

import pytest

from tests.image.support import BuiltImage, archive_manifest, project_version

pytestmark = pytest.mark.image

# Run in the image: foldline's own loader (what `--aggregate accounts_pkg:Accounts` uses) and a fold.
LOAD_ACCOUNTS = """
import json
from foldline.aggregate import load_aggregate
import accounts_pkg
spec = load_aggregate("accounts_pkg:Accounts")
aggregate = spec.aggregate
state = aggregate.fold([accounts_pkg.Deposited(5), accounts_pkg.Deposited(7)])
print(json.dumps({"name": spec.name, "balance": state.balance,
                  "rejected": type(aggregate.decide(state, accounts_pkg.Deposit(0))).__name__,
                  "module": accounts_pkg.__file__}))
"""


def test_the_team_image_loads_its_aggregate_through_foldline(accounts_image: BuiltImage) -> None:
    loaded = accounts_image.python(LOAD_ACCOUNTS)
    assert loaded["name"] == "accounts"
    assert loaded["balance"] == 12
    assert loaded["rejected"] == "Rejection"
    assert loaded["module"].startswith("/opt/foldline/lib/")


def test_the_aggregate_is_the_team_image_s_own(foldline_image: BuiltImage, accounts_image: BuiltImage) -> None:
    # The same command: the team image gets past loading the aggregate (to Kafka, which is absent here);
    # foldline's image has no such package.
    args = ("topics", "--aggregate", "accounts_pkg:Accounts", "--partitions", "1")
    team = accounts_image.run(*args, options=("--env", "FOLDLINE_KAFKA_BOOTSTRAP=127.0.0.1:9"))
    assert team.returncode == 2
    assert "BrokerUnavailableError" in team.stderr
    base = foldline_image.run(*args)
    assert base.returncode == 2
    assert "cannot import 'accounts_pkg'" in base.stderr


def test_the_team_image_keeps_foldline_s_user_and_entrypoint(accounts_image: BuiltImage) -> None:
    proc = accounts_image.run("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: foldline")
    assert accounts_image.python("import json, os; print(json.dumps(os.getuid()))") == 10001
    tags = archive_manifest(accounts_image.archive)["RepoTags"]
    assert tags == [f"docker.io/library/foldline-example-accounts:{project_version()}"]
