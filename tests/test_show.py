"""show.py end to end: folder/glob/file inputs, bad files, authors' checkpoints, overwrite rules."""
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import show
from _helpers import tiny_smoother
from csgis.checkpoint import load_smoother, ours_to_authors, save_checkpoint
from csgis.inference import smooth_image
from csgis.io import read_image

GOOD = ["a/good.png", "b/c/gray.png", "rgba.png", "deep16.png"]
BAD = ["a/empty.png", "b/fake.jpg"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """An input tree with good images of four kinds and two bad files, plus both checkpoint formats."""
    root = tmp_path_factory.mktemp("show")
    src = root / "in"
    rng = np.random.default_rng(0)
    images = {
        "a/good.png": rng.integers(0, 256, (30, 41, 3), dtype=np.uint8),
        "b/c/gray.png": rng.integers(0, 256, (23, 17), dtype=np.uint8),
        "rgba.png": rng.integers(0, 256, (20, 26, 4), dtype=np.uint8),
        "deep16.png": rng.integers(0, 65536, (19, 33, 3), dtype=np.uint16),
    }
    for name, array in images.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(src / name), array)
    (src / "a/empty.png").write_bytes(b"")
    (src / "b/fake.jpg").write_text("this is not a JPEG\n")
    (src / "notes.txt").write_text("ignored: not an image extension\n")

    model = tiny_smoother()
    ours = root / "ours.pth"
    save_checkpoint(ours, model, None, epoch=1)
    authors = root / "authors.pth"
    torch.save({"net": ours_to_authors(model.state_dict()), "now_epoch": 1, "opt": {}}, authors)
    return {"root": root, "src": src, "ours": ours, "authors": authors}


def _run_cli(python_exe, repo_root, *args):
    return subprocess.run([python_exe, str(repo_root / "show.py"), *map(str, args)], cwd=repo_root,
                          capture_output=True, text=True, timeout=300)


def test_folder_end_to_end(workspace, python_exe, repo_root):
    out = workspace["root"] / "out_folder"
    proc = _run_cli(python_exe, repo_root, "--checkpoint", workspace["ours"], "--input", workspace["src"],
                    "--output", out, "--save-edges", "--save-coarse", "--device", "cpu")
    assert proc.returncode == 1, proc.stderr  # some inputs failed
    for name in BAD:
        assert str(workspace["src"] / name) in proc.stderr
    assert "4 written, 0 skipped (outputs exist), 2 failed" in proc.stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    expected = sorted(f"{Path(n).with_suffix('')}{suffix}.png" for n in GOOD for suffix in ("", "_edge", "_coarse"))
    assert written == expected

    model = load_smoother(workspace["ours"])
    for name in GOOD:
        rgb = read_image(workspace["src"] / name)
        ref = smooth_image(model, rgb, tile=0, outputs=("prediction", "coarse", "edge"))
        stem = out / Path(name).with_suffix("")
        np.testing.assert_array_equal(read_image(f"{stem}.png"), ref["prediction"])
        np.testing.assert_array_equal(read_image(f"{stem}_coarse.png"), ref["coarse"])
        edge = cv2.imread(f"{stem}_edge.png", cv2.IMREAD_UNCHANGED)
        assert edge.ndim == 2 and edge.dtype == np.uint8
        np.testing.assert_array_equal(edge, ref["edge"])
    # The 16-bit input was reduced to 8 bits before smoothing (x / 257), not wrapped.
    assert read_image(workspace["src"] / "deep16.png").dtype == np.uint8


def test_authors_checkpoint_single_file(workspace, tmp_path):
    out = tmp_path / "out_authors"
    good = workspace["src"] / "a/good.png"
    assert show.main(["--checkpoint", str(workspace["authors"]), "--input", str(good),
                      "--output", str(out), "--tile", "32"]) == 0
    model = load_smoother(workspace["authors"])
    assert model.channel_order == "bgr"
    ref = smooth_image(model, read_image(good), tile=0)["prediction"]
    np.testing.assert_array_equal(read_image(out / "good.png"), ref)


def test_glob_input_mirrors_names(workspace, tmp_path, capsys):
    pattern = str(workspace["src"] / "**" / "*.png")
    assert show.main(["--checkpoint", str(workspace["ours"]), "--input", pattern,
                      "--output", str(tmp_path), "--device", "cpu"]) == 1  # a/empty.png fails
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.png"))
    assert written == sorted(str(Path(n).with_suffix(".png")) for n in GOOD)
    assert str(workspace["src"] / "a/empty.png") in capsys.readouterr().err


def test_existing_outputs_kept_unless_overwrite(workspace, tmp_path, capsys):
    good = workspace["src"] / "a/good.png"
    args = ["--checkpoint", str(workspace["ours"]), "--input", str(good), "--output", str(tmp_path)]
    assert show.main(args) == 0
    target = tmp_path / "good.png"
    smoothed = read_image(target)
    marker = np.full_like(smoothed, 7)
    cv2.imwrite(str(target), marker)
    capsys.readouterr()
    assert show.main(args) == 0
    err = capsys.readouterr().err
    assert f"skip {good}" in err and "0 written, 1 skipped" in err
    np.testing.assert_array_equal(read_image(target), marker)
    # A resumed run with a new output kind writes only what is missing.
    assert show.main(args + ["--save-edges"]) == 0
    np.testing.assert_array_equal(read_image(target), marker)
    assert (tmp_path / "good_edge.png").is_file()
    assert show.main(args + ["--overwrite"]) == 0
    np.testing.assert_array_equal(read_image(target), smoothed)


def test_output_inside_input_refused(workspace, capsys):
    inside = workspace["src"] / "results"
    args = ["--checkpoint", str(workspace["ours"]), "--input", str(workspace["src"]), "--output", str(inside)]
    assert show.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "inside the input folder" in err[0]
    assert not inside.exists()
    assert show.main(args[:-1] + [str(workspace["src"])]) == 2  # the input folder itself
    # Allowed with --overwrite; a rerun does not smooth its own results.
    try:
        assert show.main(args + ["--overwrite"]) == 1
        assert show.main(args + ["--overwrite"]) == 1
        names = sorted(str(p.relative_to(inside)) for p in inside.rglob("*.png"))
        assert names == sorted(str(Path(n).with_suffix(".png")) for n in GOOD)
    finally:
        for p in sorted(inside.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        inside.rmdir()


def test_bad_arguments_one_line(workspace, tmp_path, capsys):
    missing = tmp_path / "missing.pth"
    assert show.main(["--checkpoint", str(missing), "--input", str(workspace["src"]),
                      "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"show.py: error: checkpoint not found: {missing}"]

    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert show.main(["--checkpoint", str(workspace["ours"]), "--input", str(empty),
                      "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"show.py: error: no images found in {empty}")

    not_a_checkpoint = tmp_path / "bad.pth"
    not_a_checkpoint.write_text("garbage")
    assert show.main(["--checkpoint", str(not_a_checkpoint), "--input", str(workspace["src"]),
                      "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(not_a_checkpoint) in err[0]

    assert show.main(["--checkpoint", str(workspace["ours"]), "--input", str(tmp_path / "nope"),
                      "--output", str(tmp_path / "o")]) == 2
    assert "input not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_output_names_keep_extension_on_clash(tmp_path):
    files = [tmp_path / "x/a.jpg", tmp_path / "x/a.png", tmp_path / "x/b.tif"]
    names = show.output_names(tmp_path, files)
    assert {str(v) for v in names.values()} == {"x/a_jpg", "x/a_png", "x/b"}


def test_channels_last_is_on_for_cuda_only_and_changes_nothing(workspace, tmp_path, monkeypatch):
    image = workspace["src"] / "a" / "good.png"
    passed, outputs = [], []
    real = show.smooth_image

    def spy(*args, **kwargs):
        passed.append(kwargs["channels_last"])
        return real(*args, **kwargs)

    monkeypatch.setattr(show, "smooth_image", spy)
    for flag in ([], ["--channels-last"], ["--no-channels-last"]):
        out = tmp_path / (flag[0].strip("-") if flag else "default")
        assert show.main(["--checkpoint", str(workspace["ours"]), "--input", str(image), "--output", str(out),
                          "--device", "cpu", *flag]) == 0
        outputs.append(read_image(out / "good.png").astype(int))
    assert passed == [False, True, False]  # the default on the CPU is off (on CUDA: on, tests/test_cuda.py)
    assert all(np.abs(outputs[0] - other).max() <= 1 for other in outputs[1:])


def test_self_ensemble_flag_reaches_plain_and_region_smoothing(workspace, tmp_path):
    good = workspace["src"] / "a/good.png"
    model = load_smoother(workspace["ours"])
    want = smooth_image(model, read_image(good), tile=0, self_ensemble=True)["prediction"]
    assert show.main(["--checkpoint", str(workspace["ours"]), "--input", str(good), "--output", str(tmp_path / "plain"),
                      "--device", "cpu", "--tile", "0", "--self-ensemble"]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "plain" / "good.png"), want)
    assert not np.array_equal(want, smooth_image(model, read_image(good), tile=0)["prediction"])
    assert show.main(["--checkpoint", str(workspace["ours"]), "--input", str(good), "--output", str(tmp_path / "half"),
                      "--device", "cpu", "--tile", "0", "--self-ensemble", "--strength", "0.5"]) == 0
    half = np.rint(0.5 * want.astype(np.float32) + 0.5 * read_image(good).astype(np.float32)).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "half" / "good.png"), half)


def test_keep_mean_flag_reaches_plain_and_region_smoothing(workspace, tmp_path):
    good = workspace["src"] / "a/good.png"
    model = load_smoother(workspace["ours"])
    rgb = read_image(good)
    want = smooth_image(model, rgb, tile=0, keep_mean=True)["prediction"]
    assert not np.array_equal(want, smooth_image(model, rgb, tile=0)["prediction"])
    assert show.main(["--checkpoint", str(workspace["ours"]), "--input", str(good), "--output", str(tmp_path / "plain"),
                      "--device", "cpu", "--tile", "0", "--keep-mean"]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "plain" / "good.png"), want)
    assert show.main(["--checkpoint", str(workspace["ours"]), "--input", str(good), "--output", str(tmp_path / "half"),
                      "--device", "cpu", "--tile", "0", "--keep-mean", "--strength", "0.5"]) == 0
    half = np.rint(0.5 * want.astype(np.float32) + 0.5 * rgb.astype(np.float32)).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "half" / "good.png"), half)


def test_post_flag_reaches_plain_smoothing_and_a_bad_spec_is_one_line(workspace, tmp_path, capsys):
    good = workspace["src"] / "a/good.png"
    model = load_smoother(workspace["ours"])
    rgb = read_image(good)
    want = smooth_image(model, rgb, tile=0, post="l0:lambda=0.02", keep_mean=True)["prediction"]
    assert not np.array_equal(want, smooth_image(model, rgb, tile=0, keep_mean=True)["prediction"])
    assert show.main(["--checkpoint", str(workspace["ours"]), "--input", str(good), "--output", str(tmp_path / "p"),
                      "--device", "cpu", "--tile", "0", "--post", "l0:lambda=0.02", "--keep-mean"]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "p" / "good.png"), want)
    capsys.readouterr()
    assert show.main(["--checkpoint", str(workspace["ours"]), "--input", str(good), "--output", str(tmp_path / "q"),
                      "--device", "cpu", "--post", "l0:lamda=0.02"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--post" in err[0] and "lamda" in err[0]
    assert not (tmp_path / "q").exists()  # refused before anything was written
