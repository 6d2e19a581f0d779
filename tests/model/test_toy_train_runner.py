"""The toy training command (`python -m workers.model.toyworld.train`): the backbone trains in a second process
beside the image stages, so the whole run takes the longer chain's wall time on two cores, not the sum."""

from __future__ import annotations

import json
import time

import pytest

from workers.model.toyworld.train.__main__ import STAGES, main, split_for_two_cores

IMAGE_STAGES = [name for name in STAGES if name != "backbone"]


def test_the_backbone_goes_beside_the_image_stages_and_write_stays_after_both():
    assert split_for_two_cores([*STAGES, "write"], serial=False) == ([*IMAGE_STAGES, "write"], ["backbone"])
    assert split_for_two_cores(["decoder", "backbone"], serial=False) == (["decoder"], ["backbone"])


@pytest.mark.parametrize("stages", [["backbone"], ["backbone", "write"], ["vae", "decoder"]])
def test_nothing_goes_beside_when_there_is_no_second_chain(stages):
    assert split_for_two_cores(stages, serial=False) == (stages, [])


def test_serial_keeps_every_stage_in_this_process():
    stages = [*STAGES, "write"]
    assert split_for_two_cores(stages, serial=True) == (stages, [])


def _finished(work_dir, backbone_report: str) -> None:
    (work_dir / "vae").mkdir(parents=True)
    (work_dir / "vae" / "report.json").write_text(json.dumps({"stage": "vae", "done": True, "wall_s": 60.0}))
    (work_dir / "backbone").mkdir()
    (work_dir / "backbone" / "report.json").write_text(backbone_report)


def test_the_backbone_runs_in_its_own_process(tmp_path, capfd):
    _finished(tmp_path, json.dumps({"stage": "backbone", "finished": True, "stopped_by": "steps", "step": 13000,
                                    "wall_s": 120.0}))
    began = time.monotonic()
    assert main(["vae", "backbone", "--work-dir", str(tmp_path)]) == 0
    out = capfd.readouterr().out
    # the second process printed the backbone's skip line; this one printed the summary of both
    assert "[backbone] finished earlier (steps, step 13000); skipped" in out
    assert out.count("backbone") >= 2 and "vae" in out.split("[backbone]")[-1]
    assert time.monotonic() - began < 120


def test_a_failed_backbone_process_fails_the_run_before_anything_is_written(tmp_path):
    _finished(tmp_path, "{ not json")
    out = tmp_path / "checkpoint"
    with pytest.raises(SystemExit, match="failed"):
        main(["vae", "backbone", "write", "--work-dir", str(tmp_path), "--out", str(out)])
    assert not out.exists()
