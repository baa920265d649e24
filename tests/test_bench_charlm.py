"""seqtool bench --task charlm: the whole charlm training step, ours against PyTorch's."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from seqtool.diagnostics import bench as benchlib
from seqtool.cli.main import cli

TINY = ["--task", "charlm", "--hidden", "8", "--batch", "3", "--seq-len", "5", "--steps", "2", "--warmup", "1"]


def test_charlm_bench_json_record():
    r = CliRunner().invoke(cli, ["bench", *TINY, "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout.strip())
    assert (rec["task"], rec["hidden"], rec["batch"], rec["seq_len"]) == ("charlm", 8, 3, 5)
    assert rec["layers"] == 2 and rec["embed"] == 64  # the charlm defaults where none was given
    assert rec["chars_per_s"] == pytest.approx(3 * 5 / rec["step_s"])
    assert "ratio" not in rec


def test_charlm_bench_refuses_cell_options():
    r = CliRunner().invoke(cli, ["bench", *TINY, "--cell", "gru"])
    assert r.exit_code == 2
    assert "--task charlm" in r.output


def test_charlm_step_trains_and_matches_pytorch():
    # Equal starting weights, one step each: the same loss gradient, clip and Adam update
    # must leave both models with the same parameters.
    pytest.importorskip("torch")
    cfg = benchlib.CharlmBenchConfig(hidden=8, layers=2, embed=6, vocab=11, batch=3, seq_len=7)
    ours, model = benchlib.charlm_seqtool_step(cfg)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    theirs, torch_model = benchlib.charlm_torch_step(cfg, 1, before)
    for _ in range(2):  # the second step starts from the carried state
        ours()
        theirs()
    after = model.state_dict()
    torch_after = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    assert set(after) == set(torch_after)
    for name, value in after.items():
        assert not np.array_equal(value, before[name]), name
        np.testing.assert_allclose(value, torch_after[name], rtol=1e-4, atol=1e-5, err_msg=name)
