"""The ``llada`` command against a running gateway (in-process ``main`` for speed; the console script
is the same function)."""

import io
import json

import pytest

pytestmark = pytest.mark.timeout(60)
from PIL import Image

from client import cli
from server.cli import main as llada_server


def png_file(path, color=(10, 20, 30)):
    Image.new("RGB", (32, 32), color).save(path, format="PNG")
    return path


@pytest.fixture
def llada(server, monkeypatch, capsys):
    monkeypatch.setenv("LLADA_SERVER", server.address)
    monkeypatch.setenv("LLADA_API_KEY", server.api_key)

    def run(*argv):
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_submit_get_list_cancel_delete(llada):
    code, out, _ = llada("submit", "t2i", "a quiet harbour", "--width", "256", "--height", "256", "--sprint",
                         "--keep-ratio", "0.6", "--priority", "3")
    assert code == 0
    job_id = out.strip()
    code, out, _ = llada("get", job_id)
    assert code == 0 and job_id in out and "TEXT_TO_IMAGE" in out and "QUEUED" in out
    code, out, _ = llada("get", job_id, "--json")
    job = json.loads(out)
    assert job["params"]["sprint"]["keep_ratio"] == 0.6 and job["priority"] == 3
    code, out, _ = llada("list", "--state", "queued", "--all")
    assert code == 0 and job_id in out
    code, out, _ = llada("cancel", job_id)
    assert code == 0 and "CANCELLED" in out
    code, out, _ = llada("delete", job_id)
    assert (code, out.strip()) == (0, f"deleted {job_id}")
    code, _, err = llada("get", job_id)
    assert code == 1 and err.startswith("error: NOT_FOUND")


def test_submit_understand_wait_prints_the_answer(llada, server, tmp_path):
    image = png_file(tmp_path / "in.png")
    driver = server.complete_next_queued(text="A dark blue square.")
    code, out, err = llada("submit", "understand", str(image), "What is this?", "--wait")
    driver.join(5)
    assert code == 0, err
    assert out.strip() == "A dark blue square."
    assert "SUCCEEDED" in err  # the progress line


def test_submit_edit_wait_saves_the_image_and_fetch_downloads_again(llada, server, tmp_path):
    result = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(result, format="PNG")
    driver = server.complete_next_queued(image=result.getvalue())
    out_file = tmp_path / "edited.png"
    code, out, err = llada("submit", "edit", str(png_file(tmp_path / "src.png")), "make it red", "--wait",
                           "-o", str(out_file), "--cfg-text-scale", "5")
    driver.join(5)
    assert code == 0, err
    assert out_file.read_bytes() == result.getvalue()
    job_id = err.splitlines()[0].strip()
    code, out, _ = llada("fetch", job_id, "-o", str(tmp_path / "again"))
    assert code == 0
    assert (tmp_path / "again" / "image.png").read_bytes() == result.getvalue()


def test_a_failed_job_and_bad_input_exit_non_zero_with_one_line(llada, server, tmp_path):
    driver = server.complete_next_queued(fail=("MODEL_ERROR", "the decoder ran out of memory"))
    code, _, err = llada("submit", "t2i", "doomed", "--wait")
    driver.join(5)
    assert code == 1 and "FAILED: MODEL_ERROR: the decoder ran out of memory" in err
    code, _, err = llada("submit", "t2i", "bad size", "--width", "100")
    assert code == 1
    assert err.strip().count("\n") == 0 and "INVALID_ARGUMENT" in err and "(field: text_to_image.width)" in err
    code, _, err = llada("submit", "edit", str(tmp_path / "missing.png"), "x")
    assert code == 1 and "missing.png" in err
    code, _, err = llada("--api-key", "llada_wrong-key-000000000000", "list")
    assert code == 1 and "UNAUTHENTICATED" in err


def test_flags_override_the_environment(llada, server, monkeypatch):
    monkeypatch.setenv("LLADA_SERVER", "127.0.0.1:1")  # nothing listens there
    code, _, err = llada("list", "--timeout", "2")
    assert code == 1 and "UNAVAILABLE" in err
    code, _, _ = llada("list", "--server", server.address)
    assert code == 0


@pytest.mark.parametrize("command", [["up"], ["run", "t2i", "x"], ["keys", "create", "--tenant", "t"]])
def test_a_server_command_points_to_llada_server(llada, command):
    code, out, err = llada(*command)
    assert (code, out) == (2, "") and f"run `llada-server {' '.join(command)}`" in err


def test_a_key_from_llada_server_works_with_llada(llada, server, monkeypatch, capsys):
    monkeypatch.setenv("LLADA_DATABASE_URL", server.settings.database_url)
    code = llada_server(["keys", "create", "--tenant", "cli-tenant"])
    out, err = capsys.readouterr()
    assert code == 0, err
    key = out.strip()
    monkeypatch.setenv("LLADA_API_KEY", key)
    code, out, _ = llada("submit", "t2i", "mine")
    assert code == 0
    job_id = out.strip()
    monkeypatch.setenv("LLADA_API_KEY", server.api_key)  # the default tenant cannot see it
    assert llada("get", job_id)[0] == 1


def test_a_finished_image_job_shows_the_seed_it_ran_with(llada, server, tmp_path):
    result = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 90, 0)).save(result, format="PNG")
    # The worker records the seed it drew for a request without one; the user needs it to reproduce.
    driver = server.complete_next_queued(image=result.getvalue(), seed=987654321)
    code, out, err = llada("submit", "t2i", "a green field", "--wait", "-o", str(tmp_path / "field.png"))
    driver.join(5)
    assert code == 0, err
    assert "seed: 987654321" in err.splitlines()
    assert out.strip() == str(tmp_path / "field.png")  # stdout keeps only the result for scripts
    job_id = err.splitlines()[0].strip()
    code, out, _ = llada("get", job_id)
    assert code == 0 and "SUCCEEDED" in out and "seed: 987654321" in out


def test_a_job_without_a_recorded_seed_shows_none(llada, server):
    driver = server.complete_next_queued(text="Nothing but sky.")
    code, out, err = llada("submit", "understand", str(png_file(server.settings.data_dir / "sky.png")), "What?",
                           "--wait")
    driver.join(5)
    assert code == 0, err
    assert "seed" not in out + err
    code, out, _ = llada("get", err.splitlines()[0].strip())
    assert code == 0 and "seed" not in out


def test_an_empty_api_key_flag_sends_no_key(llada):
    assert llada("list")[0] == 0  # LLADA_API_KEY is set by the fixture
    code, _, err = llada("--api-key", "", "list")
    assert code == 1 and "UNAUTHENTICATED" in err and "missing API key" in err
