"""The node user asked of Batch: random bl- name, expiring, not admin, key only."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from launcher.errors import UserError
from launcher.ssh import plan_node_user

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB4qGgFuX6E1tDRvLhHGUJyQsLOb7vE1xXwS6V3C0c2u"


def test_defaults() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    plan = plan_node_user(KEY, now=now)
    assert re.fullmatch(r"bl-[0-9a-f]{8}", plan.name)
    assert plan.expiry_time == now + timedelta(days=1)
    assert plan.to_rest() == {
        "name": plan.name,
        "isAdmin": False,
        "expiryTime": "2026-01-03T03:04:05Z",
        "sshPublicKey": KEY,
    }
    assert "password" not in plan.to_rest()


def test_names_differ_and_admin_only_when_asked() -> None:
    names = {plan_node_user(KEY).name for _ in range(20)}
    assert len(names) == 20
    assert plan_node_user(KEY, is_admin=True, name="bl-debug").to_rest()["isAdmin"] is True


def test_sdk_model_carries_the_same_fields() -> None:
    plan = plan_node_user(KEY, expiry=timedelta(hours=2))
    body = plan.to_sdk().as_dict()
    assert body["name"] == plan.name
    assert body["sshPublicKey"] == KEY
    assert body["isAdmin"] is False
    assert "password" not in body
    assert body["expiryTime"].startswith(plan.expiry_time.strftime("%Y-%m-%dT%H:%M"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ssh_public_key": "not a key"}, "OpenSSH format"),
        ({"ssh_public_key": KEY, "name": "Root; rm"}, "not valid"),
        ({"ssh_public_key": KEY, "expiry": timedelta(0)}, "future"),
    ],
)
def test_bad_input(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(UserError, match=match):
        plan_node_user(**kwargs)  # type: ignore[arg-type]
