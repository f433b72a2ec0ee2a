"""The held-out benchmark (csgis/data/heldout.py, dataset_utils/make_heldout.py): its sources are
out of the training builders' reach, and it is what it says it is."""
import json

import numpy as np
import pytest
import skimage.data

from csgis.data import heldout, synthetic, textures
from csgis.data.manifest import read_manifest

TRAINING_PICTURES = set(synthetic.PHOTOS) | set(synthetic.REAL_TEXTURES) | {"stereo_motorcycle"}


def heldout_pictures() -> set[str]:
    names = set(heldout.HELDOUT_STRUCTURES) | set(heldout.HELDOUT_TEXTURES)
    return {heldout.SOURCES.get(n, n) for n in names}


def _forbid(monkeypatch, names, why):
    def refuse(*args, **kwargs):
        raise AssertionError(why)
    for name in names:
        if hasattr(skimage.data, name):
            monkeypatch.setattr(skimage.data, name, refuse)
    synthetic._skimage_image.cache_clear()
    heldout.source_image.cache_clear()


def test_no_heldout_source_is_a_training_source():
    assert not heldout_pictures() & TRAINING_PICTURES
    assert not set(heldout.HELDOUT_TEXTURES) & (set(synthetic.PROCEDURAL_TEXTURES) | set(synthetic.REAL_TEXTURES))
    assert set(heldout.VAL_SOURCES).isdisjoint(heldout.TEST_SOURCES)


def test_the_training_builder_never_reads_a_heldout_picture(tmp_path, monkeypatch):
    import make_demo_data
    _forbid(monkeypatch, heldout_pictures(), "the demo builder read a held-out picture")
    try:
        assert make_demo_data.main(["--out", str(tmp_path / "demo"), "--size", "tiny", "--workers", "1"]) == 0
    finally:
        synthetic._skimage_image.cache_clear()
    used = {r["structure"] for r in read_manifest(tmp_path / "demo")} | {r["texture"] for r in read_manifest(tmp_path / "demo")}
    assert not any(name in used for name in set(heldout.HELDOUT_TEXTURES) | set(heldout.HELDOUT_STRUCTURES))


def test_the_rich_builder_never_reads_a_heldout_picture(tmp_path, monkeypatch):
    import make_rich_data
    _forbid(monkeypatch, heldout_pictures(), "the rich builder read a held-out picture")
    try:
        assert make_rich_data.main(["--out", str(tmp_path / "rich"), "--size", "tiny", "--workers", "1"]) == 0
    finally:
        synthetic._skimage_image.cache_clear()
    assert not set(heldout.HELDOUT_TEXTURES) & set(textures.ALL_FAMILIES)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import make_heldout
    out = tmp_path_factory.mktemp("heldout") / "data"
    assert make_heldout.main(["--out", str(out)]) == 0
    return out


def test_the_heldout_builder_never_reads_a_training_picture(tmp_path, monkeypatch):
    import make_heldout
    _forbid(monkeypatch, TRAINING_PICTURES, "the held-out builder read a training picture")
    try:
        assert make_heldout.main(["--out", str(tmp_path / "h")]) == 0
    finally:
        heldout.source_image.cache_clear()


def test_an_added_source_leaves_the_older_samples_as_they_were(built, tmp_path, monkeypatch):
    """heldout.ADDED_SOURCES are drawn after every older source: a build without them holds the same
    samples, byte for byte, as the build with them, less theirs."""
    import make_heldout
    assert heldout.ADDED_SOURCES and set(heldout.ADDED_SOURCES) <= set(heldout.VAL_SOURCES) | set(heldout.TEST_SOURCES)
    for name in ("VAL_SOURCES", "TEST_SOURCES"):
        monkeypatch.setattr(heldout, name, tuple(s for s in getattr(heldout, name) if s not in heldout.ADDED_SOURCES))
    assert make_heldout.main(["--out", str(tmp_path / "older")]) == 0
    older = {(r["split"], r["id"]) for r in read_manifest(tmp_path / "older")}
    newer = {(r["split"], r["id"]) for r in read_manifest(built)}
    added = newer - older
    assert older < newer and {i.split("_")[0] for _, i in added} == set(heldout.ADDED_SOURCES)
    files = [f.relative_to(tmp_path / "older") for f in (tmp_path / "older").rglob("*.png")]
    assert len(files) > 100
    for f in files:
        assert (built / f).read_bytes() == (tmp_path / "older" / f).read_bytes(), f


def test_splits_blends_and_records(built):
    info = json.loads((built / "dataset.json").read_text())
    rows = read_manifest(built)
    assert info["complete"] and {r["id"] for r in rows} == set(info["samples"])
    test = [info["samples"][r["id"]] for r in rows if r["split"] == "test"]
    val = [info["samples"][r["id"]] for r in rows if r["split"] == "val"]
    assert {s["source"] for s in test} == set(heldout.TEST_SOURCES) and {s["source"] for s in val} == set(heldout.VAL_SOURCES)
    for part in (test, val):
        assert sum(s["blend"] == "gray" for s in part) == sum(s["blend"] == "colour" for s in part)
        assert {s["scale"] for s in part} == set(heldout.SCALES) and {s["kind"] for s in part} == {"cartoon", "photo"}
    assert all(heldout.HELDOUT_TEXTURES[s["texture"]] == "colour" for s in test if s["blend"] == "colour")


def test_the_two_blends():
    rng = np.random.default_rng(0)
    gt = np.full((60, 80, 3), 128, np.uint8)
    pattern = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    gray = heldout.blend(gt, pattern, "gray", 1.0, 1.0, (3, 5)).astype(float) - 128
    assert np.allclose(gray[..., 0], gray[..., 1]) and np.allclose(gray[..., 1], gray[..., 2])  # every channel alike
    assert abs(gray.mean()) < 1 and gray.std() == pytest.approx(heldout.TEXTURE_STD, rel=0.05)
    colour = heldout.blend(gt, pattern, "colour", 1.0, 0.6, (3, 5)).astype(float) - 128
    assert not np.allclose(colour[..., 0], colour[..., 1])
    assert np.abs(colour.mean(axis=(0, 1))).max() < 1 and colour.std() == pytest.approx(0.6 * heldout.TEXTURE_STD, rel=0.05)
    with pytest.raises(ValueError, match="unknown blend"):
        heldout.blend(gt, pattern, "sepia", 1.0, 1.0, (0, 0))


def test_evaluate_groups_by_blend_and_kind(built, capsys):
    """evaluate.py --group: the means by dataset.json fields; a ground truth (--clean) takes the fields its
    samples share; an unknown field is one line and exit 2."""
    import evaluate
    from csgis import evaluation
    from csgis.data.manifest import read_dataset_info
    info = read_dataset_info(built)
    test = [r for r in read_manifest(built) if r["split"] == "test"]
    assert evaluate.main(["--pred", str(built / "input"), "--manifest", str(built), "--split", "test",
                          "--group", "blend,kind", "--allow-missing", "--quiet"]) == 0
    out = capsys.readouterr().out
    counts = {}
    for r in test:
        key = f"{info['samples'][r['id']]['blend']}, {info['samples'][r['id']]['kind']}"
        counts[key] = counts.get(key, 0) + 1
    assert "by blend, kind:" in out and len(counts) == 4
    for key, n in counts.items():
        assert any(line.split()[1:4] == [*key.split(), str(n)] for line in out.splitlines()), key
    structures = {r["id"].split("__")[0] for r in test}
    groups = evaluation.sample_groups(info, structures, ["kind", "blend"])
    assert all(g.split(", ")[0] in ("cartoon", "photo") and g.endswith(", ?") for g in groups.values())
    assert evaluate.main(["--pred", str(built / "input"), "--manifest", str(built), "--group", "colour"]) == 2
    assert "no sample records 'colour'" in capsys.readouterr().err
