"""`llada-server run …` / `python -m workers.model.cli`: writes images and answers, refuses bad input with exit 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from workers.model import cli
from workers.model.pipeline import Pipeline

T2I = ["--width", "128", "--height", "256", "--steps", "2", "--quiet"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_t2i_writes_the_same_png_as_the_pipeline(tiny_ckpt, tmp_path):
    out = tmp_path / "nested" / "fox.png"
    assert cli.main(["t2i", "a fox", *T2I, "--seed", "3", "--model", str(tiny_ckpt), "-o", str(out)]) == 0
    written = Image.open(out)
    assert written.format == "PNG" and written.size == (128, 256)
    expected = Pipeline.from_pretrained(tiny_ckpt, decoders=()).generate_image(
        "a fox", width=128, height=256, steps=2, seed=3).image
    assert np.array_equal(np.asarray(written), np.asarray(expected))


def test_understand_prints_the_answer_and_can_save_it(tiny_ckpt, tmp_path, capsys):
    image = tmp_path / "in.png"
    Image.new("RGB", (96, 64), (0, 90, 200)).save(image)
    answer = tmp_path / "answer.txt"
    code = cli.main(["understand", str(image), "what colour?", "--gen-length", "8", "--steps", "2",
                     "--block-length", "8", "--model", str(tiny_ckpt), "--quiet", "-o", str(answer)])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.endswith("\n") and answer.read_text(encoding="utf-8") == printed


def test_edit_writes_a_png(tiny_ckpt, tmp_path):
    image, out = tmp_path / "in.png", tmp_path / "out.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    code = cli.main(["edit", str(image), "make it blue", "--steps", "2", "--crop-base", "64", "--seed", "0",
                     "--model", str(tiny_ckpt), "--quiet", "-o", str(out)])
    assert code == 0 and Image.open(out).size == (128, 128)


def test_bad_input_exits_2_naming_the_field(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert cli.main(["t2i", "a fox", "--width", "100", "--model", str(tiny_ckpt), "--quiet", "-o", str(out)]) == 2
    assert "invalid width" in capsys.readouterr().err and not out.exists()
    assert cli.main(["understand", str(tmp_path / "missing.png"), "what?", "--model", str(tiny_ckpt), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cancel_exits_130(tiny_ckpt, tmp_path, monkeypatch, capsys):
    from contextlib import contextmanager

    @contextmanager
    def interrupted_at_once():  # test double for a Ctrl-C that arrived before the first step
        yield lambda: True

    monkeypatch.setattr(cli, "cancel_on_interrupt", interrupted_at_once)
    code = cli.main(["t2i", "a fox", *T2I, "--model", str(tiny_ckpt), "-o", str(tmp_path / "x.png")])
    assert code == cli.EXIT_CANCELLED and "cancelled" in capsys.readouterr().err


def test_model_path_from_the_environment(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv(cli.MODEL_ENV, str(tiny_ckpt))
    assert cli.default_model_path() == tiny_ckpt


def test_without_a_model_the_shipped_toy_checkpoint_is_used_with_its_crop_base(tmp_path, monkeypatch):
    from shared.settings import TOY_CHECKPOINT

    monkeypatch.delenv(cli.MODEL_ENV, raising=False)
    assert cli.default_model_path() == TOY_CHECKPOINT
    assert cli.default_crop_base(TOY_CHECKPOINT) == 64
    assert cli.default_crop_base(tmp_path) == 512
    monkeypatch.setenv(cli.MODEL_ENV, str(tmp_path))
    assert cli.default_model_path() == tmp_path


def test_llada_server_dispatches_run(tiny_ckpt, tmp_path):
    from server.cli import main as llada_server

    out = tmp_path / "via-llada-server.png"
    assert llada_server(["run", "t2i", "a fox", *T2I, "--seed", "1", "--model", str(tiny_ckpt), "-o", str(out)]) == 0
    assert Image.open(out).size == (128, 256)


def test_module_runs_on_its_own():
    done = subprocess.run([sys.executable, "-m", "workers.model.cli", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    assert all(task in done.stdout for task in ("t2i", "understand", "edit"))
