"""The art data from Debian's packages (csgis.data.packages / collage / art, dataset_utils/make_art_data.py
and make_art_bench.py), on tiny fixture packages: a fake dpkg info folder whose file lists name
small images made here, never the installed packages."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from csgis.data import collage, packages
from csgis.data.manifest import read_manifest
from csgis.io import ImageReadError, read_gimp_pattern, read_image, read_label

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dataset_utils"))
import make_art_bench  # noqa: E402
import make_art_data  # noqa: E402


def write_pattern(path: Path, pixels: np.ndarray, name: str = "test") -> None:
    """A GIMP .pat file (big-endian header, name, raw pixels)."""
    h, w = pixels.shape[:2]
    depth = 1 if pixels.ndim == 2 else pixels.shape[2]
    encoded = name.encode() + b"\0"
    header = [24 + len(encoded), 1, w, h, depth]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(v.to_bytes(4, "big") for v in header) + b"GPAT" + encoded + pixels.tobytes())


def cutout(rng, size=64, photographic=False) -> np.ndarray:
    """BGRA: a flat disc (or a noisy one) on transparency."""
    img = np.zeros((size, size, 4), np.uint8)
    colour = [int(v) for v in rng.integers(0, 256, 3)]
    cv2.circle(img, (size // 2, size // 2), size // 3, colour + [255], -1)
    if photographic:
        noise = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        img[..., :3] = np.where(img[..., 3:4] > 0, noise, 0)
    return img


@pytest.fixture(scope="module")
def fake_packages(tmp_path_factory):
    """A dpkg info folder listing fixture files for every package of csgis.data.packages."""
    root = tmp_path_factory.mktemp("pkgs")
    info = root / "info"
    info.mkdir()
    rng = np.random.default_rng(0)
    lists = {}
    art_roots = {"openclipart-png": "usr/share/openclipart/png", "tuxpaint-stamps-default": "usr/share/tuxpaint/stamps"}
    for package, base in art_roots.items():
        files = []
        for category in ("animals", "food", "people/cartoon", "shapes"):
            for i in range(4):
                path = root / base / category / f"{package[:4]}_{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), cutout(rng, photographic=(i == 3)))
                files.append(path)
        icon = root / base / "icons" / "icon.png"
        if package == "openclipart-png":
            icon.parent.mkdir(parents=True)
            cv2.imwrite(str(icon), cutout(rng))
            files.append(icon)
        lists[package] = files
    for package in ("mate-backgrounds", "plasma-workspace-wallpapers", "ukui-wallpapers"):
        files = []
        for i in range(3):
            base = root / "usr/share/wallpapers" / f"{package[:4]}{i}" / "contents"
            for name, side in (("images/800x600.jpg", 200), ("images/1600x1200.jpg", 400), ("screenshot.jpg", 100)):
                path = base / name
                path.parent.mkdir(parents=True, exist_ok=True)
                picture = cv2.GaussianBlur(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), (0, 0), 1.0)
                cv2.imwrite(str(path), picture, [cv2.IMWRITE_JPEG_QUALITY, 80])
                files.append(path)
        lists[package] = files
    for package in ("gimp-data", "gimp-data-extras"):
        files = []
        for i in range(6):
            path = root / "usr/share/gimp/2.0/patterns" / f"{package}_{i}.pat"   # one folder, two packages
            write_pattern(path, rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
            files.append(path)
        flat = root / "usr/share/gimp/2.0/patterns" / f"{package}_flat.pat"
        write_pattern(flat, np.full((8, 8, 3), 90, np.uint8))
        lists[package] = files + [flat]
    for package, files in lists.items():
        (info / f"{package}.list").write_text("".join(f"{p}\n" for p in [root / "usr"] + files))
    return {"info": info, "lists": lists}


@pytest.fixture
def dpkg(fake_packages, monkeypatch):
    monkeypatch.setattr(packages, "DPKG_INFO", fake_packages["info"])
    return fake_packages


def test_gimp_pattern_reader_reads_every_depth_and_refuses_broken_files(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    write_pattern(tmp_path / "rgb.pat", rgb)
    assert np.array_equal(read_gimp_pattern(tmp_path / "rgb.pat"), rgb)
    write_pattern(tmp_path / "rgba.pat", np.dstack([rgb, np.full((5, 7), 7, np.uint8)]))
    assert np.array_equal(read_image(tmp_path / "rgba.pat"), rgb)           # read_image dispatches on .pat
    gray = rng.integers(0, 256, (4, 3), dtype=np.uint8)
    write_pattern(tmp_path / "gray.pat", gray)
    out = read_gimp_pattern(tmp_path / "gray.pat")
    assert out.shape == (4, 3, 3) and np.array_equal(out[..., 1], gray)
    write_pattern(tmp_path / "ga.pat", np.dstack([gray, gray // 2]))
    assert np.array_equal(read_gimp_pattern(tmp_path / "ga.pat")[..., 2], gray)
    data = (tmp_path / "rgb.pat").read_bytes()
    (tmp_path / "short.pat").write_bytes(data[:-5])
    (tmp_path / "magic.pat").write_bytes(data[:20] + b"XXXX" + data[24:])
    for name, words in (("short.pat", "truncated"), ("magic.pat", "not a GIMP pattern")):
        with pytest.raises(ImageReadError, match=words) as e:
            read_gimp_pattern(tmp_path / name)
        assert name in str(e.value)


def test_package_files_follow_dpkg_lists_and_keep_one_file_a_wallpaper(dpkg):
    clip = packages.package_files("openclipart-png", dpkg["info"])
    assert len(clip) == 16 and not any("/icons/" in str(p) for p in clip)
    walls = packages.package_files("ukui-wallpapers", dpkg["info"])
    assert len(walls) == 3 and all(p.name == "1600x1200.jpg" for p in walls)  # largest; no screenshot
    # gimp-data and gimp-data-extras share one folder; each package sees only its own files
    mine = {p.name for p in packages.package_files("gimp-data", dpkg["info"])}
    assert mine and all(n.startswith("gimp-data_") for n in mine)
    stamp = Path("/usr/share/tuxpaint/stamps/town/roadsigns/stop.png")
    assert packages.ART_CLASSES[packages.art_class("tuxpaint-stamps-default", stamp)] == "symbol"
    house = Path("/usr/share/tuxpaint/stamps/town/houses/house.png")
    assert packages.ART_CLASSES[packages.art_class("tuxpaint-stamps-default", house)] == "building"
    other = Path("/usr/share/openclipart/png/office/stapler.png")
    assert packages.ART_CLASSES[packages.art_class("openclipart-png", other)] == "object"


def test_training_and_benchmark_packages_are_disjoint_and_known():
    assert not set(packages.TRAIN_PACKAGES) & set(packages.BENCH_PACKAGES)
    assert set(packages.TRAIN_PACKAGES) | set(packages.BENCH_PACKAGES) == set(packages.PACKAGES)
    for role in ("art", "patterns"):  # the benchmark holds out a package of each role it uses
        assert any(packages.PACKAGES[p] == role for p in packages.BENCH_PACKAGES)
        assert any(packages.PACKAGES[p] == role for p in packages.TRAIN_PACKAGES)


def test_flatness_accepts_drawn_cutouts_and_rejects_photographic_ones(tmp_path):
    rng = np.random.default_rng(2)
    cv2.imwrite(str(tmp_path / "flat.png"), cutout(rng, 96))
    cv2.imwrite(str(tmp_path / "photo.png"), cutout(rng, 96, photographic=True))
    cv2.imwrite(str(tmp_path / "opaque.png"), np.full((40, 40, 3), 128, np.uint8))
    flat, photo, opaque = (collage.describe_cutout(tmp_path / n) for n in ("flat.png", "photo.png", "opaque.png"))
    assert flat["accepted"] and flat["flat"] > 0.9
    assert not photo["accepted"] and photo["reason"] == "not flat (photographic)"
    assert not opaque["accepted"] and "alpha" in opaque["reason"]


def test_collage_labels_each_object_with_its_class_where_it_shows():
    rgba = np.zeros((40, 40, 4), np.float32)
    rgba[5:35, 5:35] = (250, 10, 10, 1.0)
    gt, label = collage.compose(np.random.default_rng(3), [(rgba, 4), (rgba, 7)], 64, 80)
    assert gt.shape == (64, 80, 3) and gt.dtype == np.uint8 and label.shape == (64, 80)
    assert set(np.unique(label)) <= {0, 4, 7} and (label == 7).any()  # the last object is on top
    red = (gt[..., 0] > 200) & (gt[..., 1] < 60)
    assert red[label > 0].mean() > 0.8                                  # labelled pixels are the object


def test_art_builders_read_only_their_own_packages_and_resume(dpkg, tmp_path, capsys):
    train, bench = tmp_path / "art", tmp_path / "bench"
    assert make_art_data.main(["--out", str(train), "--size", "tiny", "--workers", "1"]) == 0
    assert make_art_bench.main(["--out", str(bench), "--size", "tiny", "--workers", "1"]) == 0
    train_info = json.loads((train / "dataset.json").read_text())
    bench_info = json.loads((bench / "dataset.json").read_text())
    train_sources, bench_sources = train_info["sources"], bench_info["sources"]
    assert train_sources and bench_sources
    assert {s["package"] for s in train_sources.values()} <= set(packages.TRAIN_PACKAGES)
    assert {s["package"] for s in bench_sources.values()} <= set(packages.BENCH_PACKAGES)
    bench_files = {str(f) for p in packages.BENCH_PACKAGES for f in dpkg["lists"][p]}
    assert not bench_files & set(train_sources)
    assert not bench_files & {e["path"] for e in json.loads((train / "catalogue.json").read_text())}
    assert all(s["licence"] for s in train_sources.values())
    # photographic cut-outs never become ground truths
    assert not any(Path(p).stem.endswith("_3") for p, s in {**train_sources, **bench_sources}.items()
                   if s["role"] == "art")
    rows = read_manifest(bench)
    assert {r["split"] for r in rows} == {"val", "test"} and len(rows) == 12
    assert {bench_info["samples"][r["id"]]["blend"] for r in rows} == {"gray", "colour"}
    label = read_label(bench / rows[0]["seg"])
    assert label.max() < len(packages.ART_CLASSES)
    before = {p: p.read_bytes() for p in sorted(train.rglob("*.png"))}
    capsys.readouterr()
    assert make_art_data.main(["--out", str(train), "--size", "tiny", "--workers", "1"]) == 0
    assert "resumed" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in sorted(train.rglob("*.png"))} == before


def test_missing_packages_are_named_with_their_install_line(dpkg, tmp_path, monkeypatch, capsys):
    info = tmp_path / "info"
    info.mkdir()
    (info / "gimp-data.list").write_text("")
    monkeypatch.setattr(packages, "DPKG_INFO", info)
    assert make_art_bench.main(["--out", str(tmp_path / "b"), "--size", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "tuxpaint-stamps-default" in err and "apt-get install" in err
    assert not (tmp_path / "b").exists()
