"""Every command line against a folder of hostile inputs: each case ends within a time limit with the
expected exit status, no traceback, and not one byte of the inputs changed."""
import hashlib
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _png_declaring(width: int, height: int) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Images that are empty, text, truncated, bombs, 16-bit, 1 px, oddly named, hidden; a malicious
    pickle; a folder that looks like a dataset but is broken; a text file as a config."""
    import cv2
    import torch

    from csgis.io import write_image
    folder = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    good = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
    write_image(folder / "good.png", good)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image")
    (folder / "truncated.png").write_bytes((folder / "good.png").read_bytes()[:70])
    (folder / "bomb.png").write_bytes(_png_declaring(12000, 12000))
    cv2.imwrite(str(folder / "deep16.png"), (rng.random((20, 30, 3)) * 65535).astype(np.uint16))
    write_image(folder / "one_pixel.png", good[:1, :1])
    (folder / os.fsdecode(b"name_\xff.png")).write_bytes((folder / "good.png").read_bytes())
    (folder / ".hidden.png").write_bytes((folder / "good.png").read_bytes())

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {folder / 'PWNED'}",))
    torch.save({"state_dict": Payload()}, folder / "evil.pth")
    (folder / "notes.yaml").write_text("just: [unclosed\n")
    broken = folder / "broken_dataset"
    broken.mkdir()
    (broken / "manifest.csv").write_text("id,split,input\nx,test,missing.png\n")
    return folder


def _digest(folder: Path) -> dict:
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


CASES = {
    # name: (argv, allowed exit statuses, text the message must hold)
    "show a folder of bad images": (["show.py", "--checkpoint", "{weights}", "--input", "{h}", "--output", "{out}",
                                     "--device", "cpu"], {1}, "failed"),
    "show with a text file as checkpoint": (["show.py", "--checkpoint", "{h}/text.png", "--input", "{h}/good.png",
                                             "--output", "{out}"], {2}, "cannot load checkpoint"),
    "show with a malicious checkpoint": (["show.py", "--checkpoint", "{h}/evil.pth", "--input", "{h}/good.png",
                                          "--output", "{out}"], {2}, "never loaded"),
    "evaluate a folder against itself": (["scripts/evaluate.py", "--pred", "{h}", "--gt", "{h}", "--quiet"],
                                         {1}, "problems"),
    "evaluate a malicious checkpoint": (["scripts/evaluate.py", "--checkpoint", "{h}/evil.pth", "--data",
                                         "{h}/broken_dataset"], {2}, "error"),
    "baselines on a broken dataset": (["scripts/baselines.py", "--data", "{h}/broken_dataset"], {2}, "error"),
    "train with a non-YAML config": (["train.py", "--config", "{h}/notes.yaml"], {2}, "not valid YAML"),
    "train with an image as config": (["train.py", "--config", "{h}/good.png"], {2}, "error"),
    "train on a broken dataset": (["train.py", "--config", "configs/demo.yaml", "data.root={h}/broken_dataset",
                                   "experiments_dir={out}"], {1}, "error"),
    "demo builder into a folder of photos": (["dataset_utils/make_demo_data.py", "--out", "{h}", "--overwrite",
                                              "--size", "tiny"], {2}, "no dataset.json"),
    "VOC builder on a folder that is no VOC": (["dataset_utils/build_voc_smooth.py", "--voc-root", "{h}",
                                                "--textures", "{h}", "--out", "{out}"], {2}, "error"),
    "page with a segmenter as smoother": (["app.py", "--checkpoint", "weights/demo_segmenter.pth"], {2},
                                          "is a csgis 'segmenter' checkpoint"),
    "report with a training config": (["scripts/make_report.py", "--config", "configs/demo.yaml"], {2},
                                      "needs a list of 'rows'"),
    "samples of a broken dataset": (["scripts/show_samples.py", "--root", "{h}/broken_dataset", "--out",
                                     "{out}/grid.png"], {2}, "error"),
    "show by classes over a folder with a one-pixel image": (["show.py", "--checkpoint", "{weights}", "--input", "{h}",
                                                              "--output", "{out}", "--segmenter",
                                                              "weights/demo_segmenter.pth", "--keep-classes",
                                                              "background"], {1}, "one_pixel.png: cannot smooth it"),
    "show with a post smoother that never ends": (["show.py", "--checkpoint", "{weights}", "--input",
                                                   "{h}/good.png", "--output", "{out}", "--post", "l0:kappa=1"],
                                                  {2}, "kappa=1 is out of range"),
    "show with a giant gaussian post": (["show.py", "--checkpoint", "{weights}", "--input", "{h}/good.png",
                                         "--output", "{out}", "--post", "gaussian:sigma=1e6"], {2}, "out of range"),
    "rich builder with a zero L0 lambda": (["dataset_utils/make_rich_data.py", "--out", "{out}", "--size", "tiny",
                                            "--over-smoother", "l0:lambda=0"], {2}, "lambda=0 is out of range"),
    "comparison of a broken dataset": (["scripts/make_comparison.py", "--data", "{h}/broken_dataset", "--out",
                                        "{out}/grid.png"], {2}, "error"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_inputs(case, hostile, tmp_path):
    argv, statuses, needle = CASES[case]
    weights = ROOT / "weights" / "demo_smoother.pth"
    argv = [a.format(h=hostile, out=tmp_path / "out", weights=weights) for a in argv]
    before = _digest(hostile)
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), errors="backslashreplace")
    assert proc.returncode in statuses, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    assert needle in proc.stderr + proc.stdout, proc.stderr[-2000:]
    assert _digest(hostile) == before, "an input was changed"
    assert not (hostile / "PWNED").exists()
