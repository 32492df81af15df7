"""A builder's mistake that only the ranks meet (a factory in the builder's dict, left to them
so that the launcher starts no framework) is one line per rank and exit 2, not a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.integration.jobs import run_job
from tests.unit.test_builders import KERAS_BUILDERS

pytestmark = pytest.mark.integration


def test_a_factory_failing_in_the_ranks_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "fbuilders.py").write_text(KERAS_BUILDERS.replace("import keras\n", "") + '''
def factories(input_shape, num_classes):
    return {"torch": fails, "tensorflow": kmodel}
''')
    recipe = tmp_path / "f.yaml"
    recipe.write_text("model: {builder: 'fbuilders:factories'}\ndata: {builder: "
                      "'fbuilders:data'}\noptimizer: {name: sgd}\ntrain: {epochs: 1}\n")
    result = run_job([sys.executable, "-m", "hvdkit", "train", str(recipe), "-f", "torch",
                      "-np", "2", "--run-dir", str(tmp_path / "run")], np=1, check=False)
    assert result.returncode == 2, result.output[-3000:]
    line = ("model.builder 'fbuilders:factories' factory failed (fbuilders.py:8): "
            "ValueError: no model for (4,)")
    assert f"hvdkit: error (rank 0): {line}" in result.output
    assert f"hvdkit: error (rank 1): {line}" in result.output
    assert "Traceback" not in result.output
