"""scripts/overfit_batch.py on the tiny demo data."""
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

import overfit_batch


@pytest.fixture
def config(tmp_path, demo_root) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"width": 8, "descriptor_blocks": 1, "coarse_blocks": 1, "refine_blocks": 1},
        "data": {"root": str(demo_root)}, "train": {"lr": 3e-3, "freeze_bn": True}}))
    return path


def test_one_batch_is_fitted(config, tmp_path, capsys):
    out = tmp_path / "curve.json"
    argv = ["--config", str(config), "--batch", "2", "--size", "32", "--steps", "60", "--every", "20",
            "--json", str(out)]
    assert overfit_batch.main(argv) == 0
    result = json.loads(out.read_text())
    steps, losses, psnrs = zip(*result["curve"])
    assert steps == (20, 40, 60) and len(result["ids"]) == 2
    # Training on the same batch lowers its loss and raises its PSNR.
    assert losses[-1] < losses[0] and psnrs[-1] > psnrs[0]
    assert "PSNR" in capsys.readouterr().out


def test_too_few_images_is_a_clear_error(config, capsys):
    assert overfit_batch.main(["--config", str(config), "--kind", "nosuchkind", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "manifest.csv" in err and "'nosuchkind*' rows" in err
