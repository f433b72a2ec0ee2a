"""Evaluation and baselines: known PSNR/SSIM, GT matching rules, CSV/JSON, bad files, model and filters."""
import csv
import importlib.util
import json
import math
import subprocess

import numpy as np
import pytest

from csgis import evaluation
from csgis.data.manifest import write_manifest
from csgis.filters import FILTERS, PARAM_GRIDS
from csgis.io import read_image, write_image
from csgis.metrics import image_metrics


def _image(seed, shape=(24, 28, 3), low=10, high=240):
    return np.random.default_rng(seed).integers(low, high, size=shape, dtype=np.uint8)


def _load_script(repo_root, name):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", repo_root / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def evaluate_script(repo_root):
    return _load_script(repo_root, "evaluate")


@pytest.fixture(scope="module")
def baselines_script(repo_root):
    return _load_script(repo_root, "baselines")


def _make_dataset(root, splits=(("val", 2), ("test", 2)), size=32, amplitude=lambda k: 20):
    """Tiny manifest dataset: gt = two flat regions, input = gt + gray checker texture of
    amplitude(k) gray levels for the k-th image."""
    rows = []
    y, x = np.mgrid[:size, :size]
    checker = np.sign(np.sin(x * np.pi / 2 + 0.3) * np.sin(y * np.pi / 2 + 0.3))[:, :, None]
    k = 0
    for split, count in splits:
        for _ in range(count):
            gt = np.where((x < size // 2)[:, :, None], [60 + 5 * k, 90, 120], [180, 150 - 5 * k, 70])
            textured = np.clip(gt + amplitude(k) * checker, 0, 255).astype(np.uint8)
            sid = f"s{k}"
            write_image(root / "gt" / f"{sid}.png", gt.astype(np.uint8))
            write_image(root / "input" / f"{sid}__t0.png", textured)
            rows.append({"id": f"{sid}__t0", "split": split, "input": f"input/{sid}__t0.png",
                         "gt": f"gt/{sid}.png", "edge": f"edge/{sid}.png", "seg": "",
                         "over": f"over/{sid}.png", "structure": sid, "texture": "t0"})
            k += 1
    write_manifest(root, rows)
    return rows


# --------------------------------------------------------------------------- known values
def test_constant_offset_gives_known_psnr_and_identical_gives_inf(tmp_path):
    gt = _image(0)
    write_image(tmp_path / "gt" / "a.png", gt)
    write_image(tmp_path / "gt" / "b.png", gt)
    write_image(tmp_path / "pred" / "a.png", gt + np.uint8(5))   # MSE = 25 on [0, 255]
    write_image(tmp_path / "pred" / "b.png", gt)
    report = evaluation.evaluate_folder(tmp_path / "pred", tmp_path / "gt", progress=False)
    rows = {r["name"]: r for r in report["images"]}
    expected = 10 * math.log10(255.0 ** 2 / 25.0)  # 34.1514 dB in both conventions
    assert rows["a"]["psnr_paper"] == pytest.approx(expected, abs=1e-9)
    assert rows["a"]["psnr_standard"] == pytest.approx(expected, abs=1e-9)
    # Identical images: PSNR is infinite; tables count it as PSNR_CAP so that means stay finite.
    assert rows["b"]["psnr_paper"] == rows["b"]["psnr_standard"] == evaluation.PSNR_CAP == 100.0
    assert rows["b"]["ssim_paper"] == pytest.approx(1.0, abs=1e-12)
    assert rows["b"]["ssim_standard"] == pytest.approx(1.0, abs=1e-12)
    # A constant shift leaves the variance terms alone: SSIM < 1 only through the luminance term.
    assert 0.99 < rows["a"]["ssim_standard"] < 1.0
    summary = report["methods"]["pred"]
    assert summary["n"] == 2 and summary["psnr_paper"]["mean"] == pytest.approx((expected + 100.0) / 2)
    evaluation.write_json(tmp_path / "r.json", report)  # strict JSON: no Infinity
    json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-finite {c}"))
    assert summary["ssim_paper"]["mean"] == pytest.approx((rows["a"]["ssim_paper"] + 1.0) / 2)


# --------------------------------------------------------------------------- matching
def test_name_matching_ignores_the_extension_and_keeps_subfolders(tmp_path):
    gt = _image(1)
    write_image(tmp_path / "gt" / "x" / "a.bmp", gt)
    write_image(tmp_path / "gt" / "b.png", gt)
    write_image(tmp_path / "pred" / "x" / "a.png", gt)
    write_image(tmp_path / "pred" / "b.tif", gt)
    write_image(tmp_path / "pred" / "nothing.png", gt)
    matching = evaluation.match_folder(tmp_path / "pred", tmp_path / "gt")
    pairs = {p.name: (p.gt.name, p.rule) for p in matching.pairs}
    assert pairs == {"x/a": ("a.bmp", "name"), "b": ("b.png", "name")}
    assert [p.name for p in matching.unmatched] == ["nothing.png"]
    assert matching.missing == []


def test_nks_names_match_their_structure_image(tmp_path):
    gt = _image(2)
    for name in ("S12", "S3", "S120"):
        write_image(tmp_path / "gt" / f"{name}.png", gt)
    for name in ("S12T03", "S12T04", "S120T1", "S7T02", "S3__brick"):
        write_image(tmp_path / "pred" / f"{name}.png", gt)
    matching = evaluation.match_folder(tmp_path / "pred", tmp_path / "gt")
    pairs = {p.name: (p.gt.stem, p.rule) for p in matching.pairs}
    assert pairs == {"S12T03": ("S12", "nks"), "S12T04": ("S12", "nks"), "S120T1": ("S120", "nks"),
                     "S3__brick": ("S3", "structure")}
    assert [p.stem for p in matching.unmatched] == ["S7T02"]
    assert matching.missing == []


def test_manifest_matching_by_id_or_input_stem_within_the_split(tmp_path):
    data = tmp_path / "data"
    rows = _make_dataset(data, splits=(("val", 1), ("test", 2)))
    textured = read_image(data / rows[1]["input"])
    write_image(tmp_path / "pred" / "s1__t0.png", textured)          # test row, by id / input stem
    write_image(tmp_path / "pred" / "s0__t0.png", textured)          # a val row: not in split test
    matching = evaluation.match_manifest(tmp_path / "pred", data, "test")
    assert [(p.name, p.gt.name, p.rule) for p in matching.pairs] == [("s1__t0", "s1.png", "manifest")]
    assert [p.name for p in matching.unmatched] == ["s0__t0.png"]
    assert matching.missing == ["s2__t0"]
    report = evaluation.evaluate_folder(tmp_path / "pred", manifest_root=data, split="test", progress=False)
    gt = read_image(data / "gt" / "s1.png")
    assert report["images"][0]["ssim_paper"] == pytest.approx(image_metrics(textured, gt)["ssim_paper"])


# --------------------------------------------------------------------------- CLI
def test_cli_writes_csv_and_json(tmp_path, evaluate_script, capsys):
    gt0, gt1 = _image(3), _image(4)
    write_image(tmp_path / "gt" / "S1.png", gt0)
    write_image(tmp_path / "gt" / "S2.png", gt1)
    write_image(tmp_path / "out" / "S1T01.png", gt0 + np.uint8(5))
    write_image(tmp_path / "out" / "S2T01.png", gt1 - np.uint8(10))   # MSE 100: 28.1308 dB
    code = evaluate_script.main(["--pred", str(tmp_path / "out"), "--gt", str(tmp_path / "gt"), "--quiet",
                                 "--csv", str(tmp_path / "m.csv"), "--json", str(tmp_path / "m.json")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "paper convention (zero-padded Gaussian SSIM on [0,1] RGB" in printed
    assert "BasicSR/skimage-compatible" in printed
    with open(tmp_path / "m.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["S1T01", "S2T01"]
    assert [r["rule"] for r in rows] == ["nks", "nks"]
    assert float(rows[0]["psnr_paper"]) == pytest.approx(34.151404, abs=1e-6)
    assert float(rows[1]["psnr_standard"]) == pytest.approx(28.130804, abs=1e-6)
    report = json.loads((tmp_path / "m.json").read_text())
    summary = report["methods"]["out"]
    assert summary["n"] == 2
    assert summary["psnr_paper"]["mean"] == pytest.approx((34.151404 + 28.130804) / 2, abs=1e-6)
    assert summary["psnr_paper"]["std"] == pytest.approx((34.151404 - 28.130804) / 2, abs=1e-6)
    assert set(report["conventions"]) == {"paper", "standard"}


def test_cli_bad_file_and_size_mismatch_are_reported_and_exit_nonzero(tmp_path, repo_root, python_exe):
    gt = _image(5)
    for name in ("good", "broken", "small"):
        write_image(tmp_path / "gt" / f"{name}.png", gt)
    write_image(tmp_path / "pred" / "good.png", gt)
    (tmp_path / "pred" / "broken.png").write_bytes(b"not an image at all")
    write_image(tmp_path / "pred" / "small.png", gt[:10, :10])
    result = subprocess.run([python_exe, str(repo_root / "scripts" / "evaluate.py"), "--quiet",
                             "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                             "--csv", str(tmp_path / "m.csv")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert str(tmp_path / "pred" / "broken.png") in result.stderr
    assert "size mismatch" in result.stderr and str(tmp_path / "pred" / "small.png") in result.stderr
    assert "Traceback" not in result.stderr
    with open(tmp_path / "m.csv", newline="") as f:
        assert [r["name"] for r in csv.DictReader(f)] == ["good"]


def test_cli_nothing_matched_or_missing_folder_exits_2(tmp_path, evaluate_script, capsys):
    write_image(tmp_path / "gt" / "a.png", _image(6))
    write_image(tmp_path / "pred" / "zzz.png", _image(6))
    assert evaluate_script.main(["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no prediction" in err and str(tmp_path / "pred" / "zzz.png") in err
    assert evaluate_script.main(["--pred", str(tmp_path / "nope"), "--gt", str(tmp_path / "gt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_evaluate_checkpoint_scores_model_and_input(tmp_path, evaluate_script, capsys):
    import torch

    from csgis.checkpoint import save_checkpoint
    from csgis.models.smoother import Smoother

    data = tmp_path / "data"
    _make_dataset(data, splits=(("test", 2),), size=20)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "tiny.pth", Smoother(width=4, descriptor_blocks=1, coarse_blocks=1, refine_blocks=1))
    code = evaluate_script.main(["--checkpoint", str(tmp_path / "tiny.pth"), "--data", str(data), "--quiet",
                                 "--save", str(tmp_path / "saved"), "--json", str(tmp_path / "r.json")])
    assert code == 0
    assert "input" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert list(report["methods"]) == ["input", "model"]
    assert report["methods"]["model"]["n"] == 2 and report["methods"]["model"]["seconds_per_image"] > 0
    for row in report["images"]:
        gt = read_image(row["gt"])
        pred = read_image(row["pred"])  # saved prediction (model) or the textured input (input)
        assert row["psnr_standard"] == pytest.approx(image_metrics(pred, gt)["psnr_standard"], abs=1e-9)
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["s0__t0.png", "s1__t0.png"]


def test_evaluate_clean_smooths_each_ground_truth_once(tmp_path, evaluate_script, capsys):
    """--clean: the model runs on the ground truths themselves (one row per GT, however many textured
    inputs share it), scored against them, with no "input" row; --pred mode refuses it."""
    import torch

    from csgis.checkpoint import load_smoother, save_checkpoint
    from csgis.inference import smooth_image
    from csgis.models.smoother import Smoother

    data = tmp_path / "data"
    rows = _make_dataset(data, splits=(("test", 2),), size=20)
    write_image(data / "input" / "s0__t1.png", 255 - read_image(data / "input" / "s0__t0.png"))
    write_manifest(data, rows + [dict(rows[0], id="s0__t1", input="input/s0__t1.png", texture="t1")])
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "tiny.pth", Smoother(width=4, descriptor_blocks=1, coarse_blocks=1, refine_blocks=1))
    code = evaluate_script.main(["--checkpoint", str(tmp_path / "tiny.pth"), "--data", str(data), "--quiet", "--clean",
                                 "--save", str(tmp_path / "saved"), "--json", str(tmp_path / "r.json")])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert list(report["methods"]) == ["model"] and report["clean"] is True
    assert sorted(r["name"] for r in report["images"]) == ["s0", "s1"]
    model = load_smoother(tmp_path / "tiny.pth")
    for row in report["images"]:
        gt = read_image(row["gt"])
        want = smooth_image(model, gt, tile=None)["prediction"]
        np.testing.assert_array_equal(read_image(row["pred"]), want)
        assert row["psnr_paper"] == pytest.approx(image_metrics(want, gt)["psnr_paper"], abs=1e-9)
        assert row["psnr_paper"] < 100  # a random network changes the image
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["s0.png", "s1.png"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        evaluate_script.main(["--pred", str(tmp_path / "saved"), "--gt", str(data / "gt"), "--clean"])
    assert exit_info.value.code == 2 and "--clean" in capsys.readouterr().err


def test_tone_errors_measure_signed_error_per_gray_band():
    """tone_errors: the mean of result - GT over the pixels of each GT luma band, pooled by pixels
    in tone_summary; a darkening of the dark pixels shows only in the dark band."""
    gt = np.zeros((4, 5, 3), np.uint8)
    gt[0] = 20        # dark (luma 20)
    gt[1:3] = 128     # mid
    gt[3] = 250       # bright
    result = gt.astype(np.int16)
    result[0] -= 6    # dark pixels made darker
    result[3, :2] += 3
    out = evaluation.tone_errors(result.clip(0, 255).astype(np.uint8), gt)
    assert out["pixels_dark"] == 5 and out["pixels_mid"] == 10 and out["pixels_bright"] == 5
    assert out["error_dark"] == pytest.approx(-6) and out["error_mid"] == pytest.approx(0)
    assert out["error_bright"] == pytest.approx(3 * 2 / 5)  # 253 stays within uint8
    empty = evaluation.tone_errors(gt[1:3], gt[1:3])
    assert empty["error_dark"] is None and empty["pixels_dark"] == 0
    pooled = evaluation.tone_summary([out, empty])
    assert pooled["dark"]["error"] == pytest.approx(-6) and pooled["dark"]["share"] == pytest.approx(5 / 30)
    assert pooled["mid"]["share"] == pytest.approx(20 / 30)
    line = evaluation.format_tone(pooled, "m")
    assert "dark [0,48) -6.00" in line and "mid [48,208) +0.00" in line


def test_evaluate_tone_reports_the_pooled_band_errors(tmp_path, evaluate_script, capsys):
    """--tone adds the band errors to each model row and their pooled summary to the report; --pred refuses it."""
    import torch

    from csgis.checkpoint import save_checkpoint
    from csgis.models.smoother import Smoother

    data = tmp_path / "data"
    _make_dataset(data, splits=(("test", 2),), size=20)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "tiny.pth", Smoother(width=4, descriptor_blocks=1, coarse_blocks=1, refine_blocks=1))
    code = evaluate_script.main(["--checkpoint", str(tmp_path / "tiny.pth"), "--data", str(data), "--quiet", "--tone",
                                 "--save", str(tmp_path / "saved"), "--json", str(tmp_path / "r.json")])
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    model_rows = [r for r in report["images"] if r["method"] == "model"]
    for row in model_rows:
        want = evaluation.tone_errors(read_image(row["pred"]), read_image(row["gt"]))
        assert {k: row[k] for k in want} == pytest.approx(want)
    pooled = evaluation.tone_summary(model_rows)
    assert pooled["mid"]["share"] > 0.5 and pooled["mid"]["error"] is not None
    for band, entry in report["methods"]["model"]["tone"].items():
        assert entry["share"] == pytest.approx(pooled[band]["share"])
        assert entry["error"] == (None if pooled[band]["error"] is None else pytest.approx(pooled[band]["error"]))
    assert "tone" not in report["methods"]["input"]
    assert evaluation.format_tone(report["methods"]["model"]["tone"], "model") in printed
    with pytest.raises(SystemExit) as exit_info:
        evaluate_script.main(["--pred", str(tmp_path / "saved"), "--gt", str(data / "gt"), "--tone"])
    assert exit_info.value.code == 2 and "--tone" in capsys.readouterr().err


# --------------------------------------------------------------------------- baselines
def test_baselines_select_on_val_and_score_test(tmp_path):
    data = tmp_path / "data"
    _make_dataset(data)
    grids = {"gf": [{"radius": 1, "eps": 1e-6}, {"radius": 1, "eps": 0.04}],   # identity vs smoothing
             "bf": [{"diameter": 5, "sigma_color": 5.0, "sigma_space": 2.0}]}
    report = evaluation.run_baselines(data, "test", "val", ["gf", "bf"], "psnr_paper", workers=1,
                                      grids=grids, progress=False)
    gf = report["filters"]["gf"]
    assert gf["selected_on"] == "val" and len(gf["trials"]) == 2
    best = max(gf["trials"], key=lambda t: t["psnr_paper"])
    assert gf["params"]["eps"] == best["params"]["eps"] == 0.04
    assert gf["at_grid_edge"] == ["eps"]      # the largest eps tried; the radius is not varied
    # eps 1e-6 leaves the input as it is: its validation score is the input's.
    val_input = evaluation.summarize(evaluation.score_inputs(evaluation.load_split(data, "val"), progress=False)[0])
    assert gf["trials"][0]["psnr_paper"] == pytest.approx(val_input["psnr_paper"]["mean"], abs=1e-9)
    assert report["filters"]["bf"]["selected_on"] is None     # one setting: nothing to choose
    assert report["methods"]["gf"]["psnr_paper"]["mean"] > report["methods"]["input"]["psnr_paper"]["mean"]
    assert report["methods"]["gf"]["n"] == report["n_test"] == 2 and report["n_val"] == 2
    assert gf["seconds_per_image"] > 0


def test_baselines_select_per_a_sample_field_tunes_each_part_on_its_own_validation_images(tmp_path, capsys,
                                                                                            baselines_script):
    """--select-per blend: faint-texture images choose the filter that leaves them alone, strong-texture
    ones the smoothing one; each test image is run with its own part's setting."""
    from csgis.data.manifest import write_dataset_info
    data = tmp_path / "data"
    rows = _make_dataset(data, splits=(("val", 4), ("test", 4)), amplitude=lambda k: 20 if k % 2 else 1)
    write_dataset_info(data, {"name": "t", "samples": {r["id"]: {"blend": "strong" if int(r["structure"][1:]) % 2
                                                                  else "faint"} for r in rows}})
    grids = {"gf": [{"radius": 2, "eps": 1e-6}, {"radius": 2, "eps": 0.04}]}
    per = evaluation.run_baselines(data, "test", "val", ["gf"], "psnr_paper", grids=grids, progress=False,
                                   select_per="blend")
    gf = per["filters"]["gf"]
    assert per["select_per"] == gf["select_per"] == "blend"
    assert gf["params"]["faint"]["eps"] == 1e-6 and gf["params"]["strong"]["eps"] == 0.04
    assert gf["at_grid_edge"] == {"faint": ["eps"], "strong": ["eps"]}
    assert set(gf["trials"]) == {"faint", "strong"} and all(t["n"] == 2 for t in gf["trials"]["faint"])
    pooled = evaluation.run_baselines(data, "test", "val", ["gf"], "psnr_paper", grids=grids, progress=False)
    assert pooled["select_per"] is None and pooled["filters"]["gf"]["params"]["eps"] in (1e-6, 0.04)
    # Each test image has the score of its part's setting, so the per-part choice is at least as good.
    for value in ("faint", "strong"):
        alone = evaluation.run_filter("gf", gf["params"][value], [
            s for s in evaluation.load_split(data, "test") if (int(s.id[1]) % 2 == 1) == (value == "strong")],
            progress=False)[0]
        got = {r["name"]: r["psnr_paper"] for r in per["images"] if r["method"] == "gf"}
        assert all(got[r["name"]] == pytest.approx(r["psnr_paper"]) for r in alone) and len(alone) == 2
    assert per["methods"]["gf"]["psnr_paper"]["mean"] > pooled["methods"]["gf"]["psnr_paper"]["mean"]
    # The CLI prints one line per part; a field no sample records is one error line naming dataset.json.
    assert baselines_script.main(["--data", str(data), "--filters", "gf", "--quiet", "--select-per", "blend"]) == 0
    out = capsys.readouterr().out
    assert "gf blend faint: {" in out and "gf blend strong: {" in out
    table = out[out.index("by blend:"):]
    assert "faint" in table and "strong" in table and table.count("gf ") == 2
    assert baselines_script.main(["--data", str(data), "--filters", "gf", "--quiet", "--select-per", "kind"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset.json" in err and "kind" in err


def test_grid_edges_names_settings_at_the_smallest_or_largest_value_tried():
    grid = [{"lambda_": v, "sigma": s} for v in (0.01, 0.02, 0.04) for s in (1.0, 2.0, 3.0)]
    assert evaluation.grid_edges(grid, {"lambda_": 0.02, "sigma": 2.0}) == []
    assert evaluation.grid_edges(grid, {"lambda_": 0.04, "sigma": 2.0}) == ["lambda_"]
    assert evaluation.grid_edges(grid, {"lambda_": 0.01, "sigma": 3.0}) == ["lambda_", "sigma"]
    # A setting the grid does not vary (or a default outside the grid) is not an edge.
    assert evaluation.grid_edges([{"lambda_": 0.01, "kappa": 2.0}, {"lambda_": 0.02, "kappa": 2.0}],
                                 {"lambda_": 0.02, "kappa": 2.0, "beta_max": 1e5}) == ["lambda_"]


def test_baselines_cli_writes_json_for_each_filter(tmp_path, baselines_script, capsys):
    data = tmp_path / "data"
    _make_dataset(data)
    code = baselines_script.main(["--data", str(data), "--filters", "l0,rtv,rgf", "--quiet", "--max-images", "1",
                                  "--json", str(tmp_path / "b.json"), "--save", str(tmp_path / "saved")])
    assert code == 0
    out = capsys.readouterr().out
    assert "paper convention" in out and "s/image" in out
    report = json.loads((tmp_path / "b.json").read_text())
    assert list(report["methods"]) == ["input", "l0", "rtv", "rgf"]
    for name in ("l0", "rtv", "rgf"):
        entry = report["filters"][name]
        assert entry["selected_on"] == "val" and entry["select_metric"] == "ssim_paper"
        assert len(entry["trials"]) == len(PARAM_GRIDS[name]) and entry["n"] == 1
        assert entry["at_grid_edge"] == evaluation.grid_edges(PARAM_GRIDS[name], entry["params"])
        best = max(entry["trials"], key=lambda t: t["ssim_paper"])
        assert all(entry["params"][k] == v for k, v in best["params"].items())
        assert set(entry["metrics"]) == set(evaluation.METRIC_KEYS)
        assert entry["metrics"]["ssim_paper"]["std"] == 0.0           # one image
        assert (tmp_path / "saved" / name / "s2__t0.png").is_file()
    with pytest.raises(SystemExit) as exit_info:
        baselines_script.main(["--data", str(data), "--filters", "l0,nope"])
    assert exit_info.value.code == 2
    assert set(FILTERS) >= {"l0", "rtv", "rgf", "gf", "bf", "btf", "fgs"}


def test_finishes_of_one_network_pass_score_as_separate_evaluations(tmp_path):
    """evaluate_model_finishes (the report's shipped-file variants): keep_mean and post applied to one
    network pass give, image by image, the scores and predictions of one evaluate_model each."""
    import torch

    from csgis.checkpoint import save_checkpoint
    from csgis.models.smoother import Smoother

    data = tmp_path / "data"
    _make_dataset(data, splits=(("test", 3),), size=24)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "tiny.pth", Smoother(width=4, descriptor_blocks=1, coarse_blocks=1, refine_blocks=1))
    finishes = [{"label": "plain"}, {"label": "mean", "keep_mean": True},
                {"label": "post", "post": "l0:lambda=0.05", "keep_mean": True, "save_dir": tmp_path / "post"}]
    together = evaluation.evaluate_model_finishes(tmp_path / "tiny.pth", data, finishes, progress=False,
                                                  self_ensemble=True)
    for finish, report in zip(finishes, together):
        alone = evaluation.evaluate_model(tmp_path / "tiny.pth", data, label=finish["label"], progress=False,
                                          self_ensemble=True, keep_mean=finish.get("keep_mean", False),
                                          post=finish.get("post"), save_dir=tmp_path / "alone" / finish["label"])
        keys = ("name", "method", *evaluation.METRIC_KEYS)
        assert [{k: r[k] for k in keys} for r in report["images"]] == [{k: r[k] for k in keys} for r in alone["images"]]
        assert (report["keep_mean"], report["post"]) == (alone["keep_mean"], alone["post"])
    assert together[0]["methods"]["plain"]["psnr_paper"] != together[2]["methods"]["post"]["psnr_paper"]
    for path in sorted((tmp_path / "post").glob("*.png")):
        assert np.array_equal(read_image(path), read_image(tmp_path / "alone" / "post" / path.name))
    assert len(list((tmp_path / "post").glob("*.png"))) == 3
    with pytest.raises(ValueError, match="scale 1"):
        evaluation.evaluate_model_finishes(tmp_path / "tiny.pth", data, finishes[:2], scale=2.0, progress=False)


def test_evaluate_post_scores_the_post_filtered_result_and_refuses_a_bad_spec(tmp_path, evaluate_script, capsys):
    """--post SPEC: the saved and scored prediction is smooth_image(..., post=SPEC, keep_mean=...); the
    JSON records the spec; a bad spec or --post in --pred mode is one usage line, before any scoring."""
    import torch

    from csgis.checkpoint import load_smoother, save_checkpoint
    from csgis.inference import smooth_image
    from csgis.models.smoother import Smoother

    data = tmp_path / "data"
    _make_dataset(data, splits=(("test", 2),), size=24)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "tiny.pth", Smoother(width=4, descriptor_blocks=1, coarse_blocks=1, refine_blocks=1))
    code = evaluate_script.main(["--checkpoint", str(tmp_path / "tiny.pth"), "--data", str(data), "--quiet",
                                 "--post", "l0:lambda=0.05", "--keep-mean",
                                 "--save", str(tmp_path / "saved"), "--json", str(tmp_path / "r.json")])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["post"] == "l0:lambda=0.05" and report["keep_mean"] is True
    model = load_smoother(tmp_path / "tiny.pth")
    for row in (r for r in report["images"] if r["method"] == "model"):
        textured = read_image(data / "input" / f"{row['name']}.png")
        want = smooth_image(model, textured, post="l0:lambda=0.05", keep_mean=True)["prediction"]
        assert not np.array_equal(want, smooth_image(model, textured, keep_mean=True)["prediction"])
        np.testing.assert_array_equal(read_image(row["pred"]), want)
    capsys.readouterr()
    for argv in (["--checkpoint", str(tmp_path / "tiny.pth"), "--data", str(data), "--post", "l0:lamda=1"],
                 ["--pred", str(tmp_path / "saved"), "--gt", str(data / "gt"), "--post", "l0"]):
        with pytest.raises(SystemExit) as exit_info:
            evaluate_script.main(argv)
        assert exit_info.value.code == 2 and "--post" in capsys.readouterr().err


def test_each_image_is_scored_once_whatever_copies_the_prediction_folder_holds(tmp_path):
    from pathlib import Path

    import numpy as np

    from csgis.evaluation import evaluate_folder
    from csgis.io import write_image
    rng = np.random.default_rng(0)
    gts = {f"im{i}": rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for i in range(3)}
    pred = tmp_path / "pred"
    for name, gt in gts.items():
        write_image(pred / "gt" / f"{name}.png", gt)           # a ground-truth folder inside the predictions
        write_image(pred / f"{name}.png", np.clip(gt.astype(int) + 3, 0, 255).astype(np.uint8))
        write_image(pred / "again" / f"{name}.png", gt)        # the same names in a subfolder
    write_image(pred / "im0.jpg", gts["im0"])                  # and beside it under another extension
    report = evaluate_folder(pred, pred / "gt", progress=False)
    assert report["matched"] == 3 and report["methods"]["pred"]["n"] == 3
    assert all(Path(r["pred"]).parent == pred for r in report["images"])
    assert len(report["repeated"]) == 3 + 3 + 1
