"""scripts/image-check.sh and its job half, without containers: the script parses and says what it does, and
every job it submits is one the gateway accepts (a refused job would only show after ten minutes of builds)."""

from __future__ import annotations

import importlib.util
import subprocess

import pytest
from tests.deploy.deploy_paths import REPO

from shared.jobs import JobKind, validate_params

SCRIPT = REPO / "scripts" / "image-check.sh"


def jobs_module():
    spec = importlib.util.spec_from_file_location("image_check_jobs", REPO / "scripts" / "image_check_jobs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_parses_and_its_help_names_what_it_checks():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, timeout=30).returncode == 0
    result = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for words in ("podman", "mmdebstrap", "runc", "stopped during a"):
        assert words in result.stdout, words


@pytest.mark.parametrize("name,kind", [("TEXT_TO_IMAGE", JobKind.TEXT_TO_IMAGE), ("LONG_JOB", JobKind.TEXT_TO_IMAGE),
                                       ("UNDERSTAND", JobKind.UNDERSTAND), ("EDIT", JobKind.EDIT)])
def test_every_job_the_check_submits_is_valid(name, kind):
    params = dict(getattr(jobs_module(), name))
    text_field = {JobKind.TEXT_TO_IMAGE: "prompt", JobKind.UNDERSTAND: "question", JobKind.EDIT: "instruction"}[kind]
    params.setdefault(text_field, "x")
    validate_params(kind, params, max_prompt_chars=4000)  # raises InvalidArgument naming the field
