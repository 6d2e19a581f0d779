"""Each tenant's webhook signing secrets: created once, rotated (both sign), retired (the newest alone signs);
listings never show a whole secret; the operator reaches it all through `llada-server webhook-secret`."""

from __future__ import annotations

import pytest

from server.cli import main as llada_server
from shared.jobs import InvalidArgument
from shared.webhooks import secrets as ws


def test_create_rotate_retire(s):
    first = ws.create_secret(s, "acme")
    assert ws.signing_secrets(s, "acme") == [first] and ws.signing_secrets(s, "globex") == []
    with pytest.raises(InvalidArgument, match="already has a signing secret"):
        ws.create_secret(s, "acme")
    second = ws.rotate_secret(s, "acme")
    assert ws.signing_secrets(s, "acme") == [second, first]  # newest first; both sign during the rotation
    assert ws.retire_old_secrets(s, "acme") == 1
    assert ws.signing_secrets(s, "acme") == [second]
    assert ws.retire_old_secrets(s, "acme") == 0
    rows = ws.list_secrets(s, "acme")
    assert [r.retired_at is None for r in rows] == [False, True]


def test_a_tenant_without_a_secret_cannot_rotate_or_retire(s):
    for change in (ws.rotate_secret, ws.retire_old_secrets):
        with pytest.raises(InvalidArgument, match="no signing secret"):
            change(s, "nobody")


@pytest.mark.parametrize("tenant", ["", "   ", "x" * 129, "bad\nname"])
def test_a_bad_tenant_name_is_refused(s, tenant):
    with pytest.raises(InvalidArgument) as err:
        ws.create_secret(s, tenant)
    assert err.value.field == "tenant"


def test_the_tenant_name_at_its_limit_is_accepted(s):
    assert ws.create_secret(s, "x" * 128).startswith("whsec_")


def test_the_operator_command_shows_a_secret_once(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    assert llada_server(["migrate", "--url", url]) == 0
    capsys.readouterr()
    assert llada_server(["webhook-secret", "create", "--tenant", "acme", "--database-url", url]) == 0
    first = capsys.readouterr().out.strip()
    assert llada_server(["webhook-secret", "rotate", "--tenant", "acme", "--database-url", url]) == 0
    second = capsys.readouterr().out.strip()
    assert first.startswith("whsec_") and second.startswith("whsec_") and first != second
    assert llada_server(["webhook-secret", "list", "--database-url", url]) == 0
    listed = capsys.readouterr().out
    assert first[:12] in listed and first not in listed and second not in listed
    assert llada_server(["webhook-secret", "retire", "--tenant", "acme", "--database-url", url]) == 0
    assert "retired 1 older secret" in capsys.readouterr().out
    assert llada_server(["webhook-secret", "create", "--tenant", "acme", "--database-url", url]) == 2
    assert "rotate it instead" in capsys.readouterr().err
