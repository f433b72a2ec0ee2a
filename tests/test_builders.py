"""Dataset builders: VOC-smooth on a tiny fake VOC tree, and the embedded demo (--size tiny)."""
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

import build_voc_smooth as voc_builder
import make_demo_data as demo_builder
from csgis.data.manifest import read_dataset_info, read_manifest
from csgis.io import read_image, read_label, write_image, write_label

ROOT = Path(__file__).resolve().parents[1]
IDS = ["2007_000001", "2007_000002", "2007_000003", "2008_000004", "2009_000005", "2010_000006"]
BROKEN = "2011_000007"      # zero-byte JPEG
MISMATCH = "2011_000008"    # label of another size




def _hashes(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fake_voc(tmp_path_factory):
    """VOCdevkit/VOC2012 with 6 good images, a zero-byte JPEG, a size mismatch; a texture folder."""
    base = tmp_path_factory.mktemp("voc")
    voc = base / "VOCdevkit" / "VOC2012"
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(),
              skimage.data.rocket(), skimage.data.immunohistochemistry(), skimage.data.astronaut()[::-1]]
    rng = np.random.default_rng(0)
    labels = {}
    for voc_id, photo in zip(IDS, photos):
        write_image(voc / "JPEGImages" / f"{voc_id}.jpg", cv2.resize(photo, (40, 32), interpolation=cv2.INTER_AREA))
        label = rng.integers(0, 21, (4, 5)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
        label[::7, :] = 255  # ignore stripes, as VOC's object borders
        labels[voc_id] = label
        write_label(voc / "SegmentationClass" / f"{voc_id}.png", label)
    (voc / "JPEGImages" / f"{BROKEN}.jpg").write_bytes(b"")
    write_label(voc / "SegmentationClass" / f"{BROKEN}.png", labels[IDS[0]])
    write_image(voc / "JPEGImages" / f"{MISMATCH}.jpg", cv2.resize(photos[0], (40, 32)))
    write_label(voc / "SegmentationClass" / f"{MISMATCH}.png", np.zeros((30, 30), np.uint8))
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "trainval.txt").write_text("\n".join(IDS) + "\n")
    ids_file = base / "ids.txt"
    ids_file.write_text("# test ids\n" + "\n".join(IDS + [BROKEN, MISMATCH]) + "\n")
    textures = base / "textures"
    for name in ("brick", "grass", "gravel"):
        write_image(textures / f"{name}.png", getattr(skimage.data, name)()[100:116, 200:212])
    write_image(textures / "sub" / "colour.jpg", skimage.data.coffee()[:10, :14])
    (textures / "notes.png").write_bytes(b"not an image")
    return {"root": base, "voc": voc, "ids": ids_file, "textures": textures, "labels": labels}


def _voc_args(fake_voc, out, *extra):
    return ["--voc-root", str(fake_voc["root"]), "--textures", str(fake_voc["textures"]),
            "--out", str(out), "--ids", str(fake_voc["ids"]), "--workers", "1",
            "--split", "0.5,0.25,0.25", "--test-only-textures", "1", *extra]


def test_voc_builder_labels_splits_bad_files_and_resume(fake_voc, tmp_path, capsys):
    out = tmp_path / "voc_smooth"
    assert voc_builder.main(_voc_args(fake_voc, out)) == 0
    printed = capsys.readouterr().out
    rows = read_manifest(out)
    structures = {r["structure"] for r in rows}
    assert structures == set(IDS)  # broken and mismatched GTs skipped
    # bad files reported with their path and reason, and counted
    assert f"{BROKEN}.jpg: file is empty" in printed
    assert f"{MISMATCH}.jpg: size 40x32 differs from label" in printed and f"{MISMATCH}.png" in printed
    assert "notes.png" in printed and "skipped files: 3" in printed
    # labels survive byte for byte, class ids intact
    for voc_id in IDS:
        src = fake_voc["voc"] / "SegmentationClass" / f"{voc_id}.png"
        assert (out / "seg" / f"{voc_id}.png").read_bytes() == src.read_bytes()
        assert np.array_equal(read_label(out / "seg" / f"{voc_id}.png"), fake_voc["labels"][voc_id])
        assert read_image(out / "gt" / f"{voc_id}.png").shape == (32, 40, 3)  # full size kept
    # no GT in two splits; all three splits present; the held-out texture only in test
    split_of = {}
    for r in rows:
        assert split_of.setdefault(r["structure"], r["split"]) == r["split"]
    assert sorted(split_of.values()).count("train") == 3 and set(split_of.values()) == {"train", "val", "test"}
    held = read_dataset_info(out)["config"]["test_only_textures"]
    assert len(held) == 1
    assert all(r["split"] == "test" for r in rows if r["texture"] == held[0])
    assert len([r for r in rows if r["split"] == "test"]) == 4  # test GTs get all 4 textures
    assert {r["texture"] for r in rows} == {"brick", "grass", "gravel", "sub_colour"}
    # the input is the GT plus one gray pattern
    r = rows[0]
    blended = read_image(out / r["input"]).astype(int)
    diff = blended - read_image(out / r["gt"]).astype(int)
    unclipped = ((blended > 0) & (blended < 255)).all(axis=2)
    assert unclipped.mean() > 0.5 and np.array_equal(diff[unclipped, 0], diff[unclipped, 2])

    # interrupted build: some outputs and the manifest gone; a rerun restores identical files
    before = _hashes(out)
    for rel in (rows[0]["input"], rows[3]["gt"], rows[5]["edge"], rows[2]["seg"], "manifest.csv"):
        (out / rel).unlink()
    (out / "gt" / ".stale.png.tmp").write_bytes(b"half")  # a temporary file left by a kill
    assert voc_builder.main(_voc_args(fake_voc, out)) == 0
    assert _hashes(out) == before

    # determinism: a fresh build with the same seed is byte-identical
    again = tmp_path / "again"
    assert voc_builder.main(_voc_args(fake_voc, again)) == 0
    assert _hashes(again) == before


def test_voc_builder_refuses_bad_input_and_protects_output(fake_voc, tmp_path, capsys):
    # --ids and --num-gt together are refused by argparse (exit 2, one usage line)
    with pytest.raises(SystemExit) as e:
        voc_builder.parse_args(["--voc-root", "x", "--textures", "y", "--out", "z", "--ids", "a", "--num-gt", "2"])
    assert e.value.code == 2
    capsys.readouterr()
    # missing VOC folder, empty texture folder: one line, non-zero
    assert voc_builder.main(["--voc-root", str(tmp_path / "nope"), "--textures", str(fake_voc["textures"]),
                             "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no VOC 2012 tree at") and "\n" not in err
    (tmp_path / "empty").mkdir()
    assert voc_builder.main(["--voc-root", str(fake_voc["root"]), "--textures", str(tmp_path / "empty"),
                             "--out", str(tmp_path / "o2")]) == 2
    assert "holds no readable images" in capsys.readouterr().err
    # an output folder with a different dataset is refused; --overwrite replaces it
    small = tmp_path / "small"
    assert voc_builder.main(["--voc-root", str(fake_voc["root"]), "--textures", str(fake_voc["textures"]),
                             "--out", str(small), "--num-gt", "3", "--workers", "1"]) == 0
    first = _hashes(small)
    other = ["--voc-root", str(fake_voc["root"]), "--textures", str(fake_voc["textures"]),
             "--out", str(small), "--num-gt", "3", "--workers", "1", "--seed", "7"]
    capsys.readouterr()
    assert voc_builder.main(other) == 2
    assert "holds a different dataset" in capsys.readouterr().err
    assert _hashes(small) == first  # nothing touched
    assert voc_builder.main(other + ["--overwrite"]) == 0
    assert read_dataset_info(small)["seed"] == 7
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("keep me")
    assert voc_builder.main(["--voc-root", str(fake_voc["root"]), "--textures", str(fake_voc["textures"]),
                             "--out", str(foreign), "--num-gt", "2", "--workers", "1"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_demo_builder_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo_builder.main(["--out", str(out), "--size", "tiny", "--workers", "1", "--seed", "3"]) == 0
    rows = read_manifest(out)
    info = read_dataset_info(out)
    assert info["complete"] and info["classes"][:6] == ["background", "disc", "rectangle", "triangle", "ring", "star"]
    splits = {r["split"] for r in rows}
    assert splits == {"train", "val", "test"}
    split_of = {}
    for r in rows:
        assert split_of.setdefault(r["structure"], r["split"]) == r["split"]  # split by structure
        for key in ("input", "gt", "edge", "over"):
            assert (out / r[key]).is_file()
    seen = {r["texture"] for r in rows if r["split"] != "test"}
    test_only = {r["texture"] for r in rows if r["split"] == "test"} - seen
    assert test_only and test_only == {k for k, v in info["textures"].items() if v == "test-only"}
    # scenes carry shape classes; photo crops are all-ignore (no seg file)
    scene_rows = [r for r in rows if r["seg"]]
    assert scene_rows and any(not r["seg"] for r in rows)
    classes = set()
    for r in scene_rows:
        label = read_label(out / r["seg"])
        gt = read_image(out / r["gt"])
        assert label.shape == gt.shape[:2] and label.max() <= 5
        classes |= set(np.unique(label).tolist())
        edge = read_image(out / r["edge"])[..., 0]
        assert set(np.unique(edge)) <= {0, 255}
    assert 0 in classes and len(classes) >= 4
    # textured input differs from the GT, the over-smoothed image too
    r = rows[0]
    gt = read_image(out / r["gt"]).astype(int)
    assert np.abs(read_image(out / r["input"]).astype(int) - gt).mean() > 5
    # rerun without --overwrite on the same dataset resumes (nothing changes); other seed refused
    before = _hashes(out)
    assert demo_builder.main(["--out", str(out), "--size", "tiny", "--workers", "1", "--seed", "3"]) == 0
    assert _hashes(out) == before
    capsys.readouterr()
    assert demo_builder.main(["--out", str(out), "--size", "tiny", "--workers", "1"]) == 2
    assert "holds a different dataset" in capsys.readouterr().err


def test_voc_builder_ids_cannot_leave_out_and_must_exist(fake_voc, tmp_path, capsys):
    out = tmp_path / "voc_smooth"
    escape = tmp_path / "escape.txt"
    escape.write_text("../../outside\n")
    args = _voc_args(fake_voc, out)
    args[args.index("--ids") + 1] = str(escape)
    assert voc_builder.main(args) == 2
    assert "'../../outside' is not an image id" in capsys.readouterr().err
    assert not (tmp_path / "outside.png").exists() and not list(tmp_path.rglob("outside*"))
    # ids that exist nowhere: an error, not an empty dataset reported as built
    absent = tmp_path / "absent.txt"
    absent.write_text("2099_000001\n2099_000002\n")
    args[args.index("--ids") + 1] = str(absent)
    assert voc_builder.main(args) == 2
    assert "none of the 2 ids has its image and label" in capsys.readouterr().err
    assert not (out / "manifest.csv").exists()
