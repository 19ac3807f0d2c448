"""Every guide runs as written, on the current backend."""

import os
import pathlib
import subprocess
import sys

import pytest

GUIDES = sorted((pathlib.Path(__file__).parent.parent / "guides").glob("*.py"))


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_guide_runs(guide, tmp_path):
    result = subprocess.run(
        [sys.executable, str(guide)], cwd=tmp_path, capture_output=True, text=True,
        # One torch thread, as in conftest: the guides' models are tiny.
        env={"OMP_NUM_THREADS": "1", **os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_readme_quickstart_runs(tmp_path):
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "weight/hard" in result.stdout
