"""The key commands operators run (`python -m services.gateway.admin`, also `llada-server keys ...`): create-key
prints the key once, list-keys never shows it, revoke-key takes an id or a prefix and refuses the key
itself and ambiguous prefixes."""

import pytest

from server.cli import main as llada_server
from services.gateway.admin import main as admin
from shared import repository as repo
from shared.db import make_engine, session_factory, upgrade


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield url, session_factory(engine)
    engine.dispose()


def run(capsys, *argv, via_llada_server=False):
    code = (llada_server(["keys", *argv]) if via_llada_server else admin(list(argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_list_and_revoke_by_id_and_by_prefix(db, capsys):
    url, sessions = db
    code, out, _ = run(capsys, "--database-url", url, "create-key", "--tenant", "acme")
    first = out.strip()
    assert code == 0 and first.startswith("llada_")
    second = run(capsys, "create", "--tenant", "beta", "--database-url", url, via_llada_server=True)[1].strip()

    code, out, _ = run(capsys, "--database-url", url, "list-keys")
    assert code == 0 and first not in out and second not in out
    rows = out.splitlines()[1:]
    assert [row.split()[-1] for row in rows] == ["acme", "beta"]
    assert first[:repo.API_KEY_PREFIX_CHARS] in rows[0] and second[:repo.API_KEY_PREFIX_CHARS] in rows[1]
    first_id = rows[0].split()[0]

    code, out, _ = run(capsys, "--database-url", url, "revoke-key", first_id)
    assert code == 0 and "acme" in out and first not in out
    code, out, _ = run(capsys, "revoke", "--database-url", url, second[:9], via_llada_server=True)
    assert code == 0 and "beta" in out
    with sessions() as s:
        assert repo.tenant_for_api_key(s, first) is None and repo.tenant_for_api_key(s, second) is None
    assert run(capsys, "--database-url", url, "list-keys", "--tenant", "acme")[1].count("\n") == 2
    code, _, err = run(capsys, "--database-url", url, "revoke-key", first_id)
    assert code == 1 and "no active key" in err


def test_the_key_itself_and_an_ambiguous_prefix_are_refused(db, capsys):
    url, sessions = db
    with sessions() as s:
        repo.register_api_key(s, "acme", "llada_shared-key-one-0000")
        repo.register_api_key(s, "acme", "llada_shared-key-two-0000")
        own = repo.create_api_key(s, "beta")
    code, _, err = run(capsys, "--database-url", url, "revoke-key", own)
    assert code == 2 and "never the key itself" in err and own not in err
    code, _, err = run(capsys, "--database-url", url, "revoke-key", "llada_shar")
    assert code == 2 and "matches 2 active keys" in err
    with sessions() as s:
        assert repo.tenant_for_api_key(s, own) == "beta"
        assert repo.tenant_for_api_key(s, "llada_shared-key-one-0000") == "acme"


def test_revoke_key_help_says_to_pass_no_key(capsys):
    with pytest.raises(SystemExit):
        admin(["revoke-key", "--help"])
    assert "never pass the key itself" in capsys.readouterr().out.lower().replace("\n", " ")
