"""scripts/make_report.py: the report definition, and end to end on the tiny demo data."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import make_report
from _helpers import tiny_config
from csgis.config import load_config, to_dict
from csgis.evaluation import METRIC_KEYS
from csgis.io import read_image

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("n", *METRIC_KEYS)


def tiny_plan(tmp_path: Path, demo_root: Path, filename: str = "report.yaml", **changes) -> Path:
    """A report on a width-4 smoother trained for 2 epochs of 1 step per run (LR halved after epoch 1)."""
    heldout_root = tmp_path / "heldout"  # built by the report when it is first needed
    config = tmp_path / "tiny.yaml"
    if not config.is_file():
        cfg = tiny_config(demo_root, tmp_path / "unused", "tiny", seed=0, data={"repeat": 1},
                          train={"epochs": 2, "batch_size": 2, "max_iters_per_epoch": 1, "val_every": 1,
                                 "freeze_bn": True})
        config.write_text(yaml.safe_dump(to_dict(cfg)))
    plan = {
        "data": str(demo_root), "experiments": str(tmp_path / "exp"), "out": str(tmp_path / "docs"), "shipped": "",
        "seeds": [0, 1], "baselines": {"filters": ["l0", "fgs"], "select_on": "val"},
        "verdicts": ["full", "full_2x"], "training_length": ["full", "full_2x"], "train_split": ["full", "full_2x"],
        "grid": {"run": "full_2x", "filters": ["l0", "fgs"], "rows": 2},
        "regions": {"smoother": str(ROOT / "weights" / "demo_smoother.pth"), "per_structure": 1},
        "heldout": {"data": str(heldout_root), "size": "tiny", "scales": [2], "self_ensemble": True,
                    "keep_mean": True, "post": "l0:lambda=0.05", "select_per": "blend"},
        "rows": [{"name": "baseline", "title": "baseline", "config": str(config),
                  "overrides": ["loss.contrastive=0"]},
                 {"name": "full", "config": str(config)},
                 {"name": "full_2x", "title": "full, 2x", "config": str(config), "step_scale": 2, "seeds": "first"}],
        **changes,
    }
    path = tmp_path / filename
    path.write_text(yaml.safe_dump(plan, allow_unicode=True))
    return path


def test_report_trains_scores_and_writes(demo_root, tmp_path, capsys):
    plan = tiny_plan(tmp_path, demo_root)
    exp, out = tmp_path / "exp", tmp_path / "docs"
    argv = ["--config", str(plan), "--workers", "1"]
    assert make_report.main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    # Every row x seed, full_2x for the first seed only, with twice the epochs.
    assert set(result["runs"]) == {"baseline_s0", "baseline_s1", "full_s0", "full_s1", "full_2x_s0"}
    for name, run in result["runs"].items():
        assert run["train"]["steps"] == (4 if name == "full_2x_s0" else 2) and run["train"]["train_seconds"] > 0
    assert (load_config(exp / "full_2x_s0" / "config.yaml").train.milestones,
            load_config(exp / "full_2x_s0" / "config.yaml").train.epochs) == ([2], 4)
    # The table's means are the means over seeds of the per-run test scores, std the sample std.
    for row in ("baseline", "full"):
        values = [result["runs"][f"{row}_s{s}"]["test"]["psnr_paper"]["mean"] for s in (0, 1)]
        mean, std = result["rows"][row]["psnr_paper"]
        assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
    assert result["runs"]["full_s0"]["test"] != result["runs"]["full_s1"]["test"]  # seeds give other networks
    # Verdicts: a row beats every classical smoother exactly when it has no shortfall.
    assert set(result["verdicts"]) == {"full", "full_2x"}
    for verdict in result["verdicts"].values():
        assert verdict["beats_all_classical"] == (verdict["shortfalls"] == [])
    # Training length: full_2x's checkpoint after the 1x budget (2 epochs, LR still 1e-3 there), then the
    # final weights of both runs with the LR of their last epoch (halved from the milestone on).
    curve = [{k: row[k] for k in ("run", "weights", "steps", "lr", "final")} for row in result["training_length"]]
    assert curve == [{"run": "full_2x_s0", "weights": "epoch_0002", "steps": 2, "lr": 1e-3, "final": False},
                     {"run": "full_s0", "weights": "latest", "steps": 2, "lr": 5e-4, "final": True},
                     {"run": "full_2x_s0", "weights": "latest", "steps": 4, "lr": 5e-4, "final": True}]
    assert result["training_length"][2]["psnr_paper"] == result["runs"]["full_2x_s0"]["test"]["psnr_paper"]["mean"]
    # Groups: every image in one kind and one texture group; the n-weighted group means give the overall means.
    groups, n = result["by_image_group"], result["baselines"]["input"]["n"]
    overall = {"input": result["baselines"]["input"]["psnr_paper"]["mean"],
               "FGS": result["baselines"]["filters"]["fgs"]["psnr_paper"]["mean"],
               "full": result["rows"]["full"]["psnr_paper"][0]}
    for label, want in overall.items():
        cells = groups[label]
        for part in ([g for g in cells if "textures" not in g], [g for g in cells if "textures" in g]):
            assert part and sum(cells[g]["n"] for g in part) == n
            assert sum(cells[g]["n"] * cells[g]["psnr_paper"] for g in part) / n == pytest.approx(want)
    assert set(result["training_split"]) == {"input", "full", "full_2x"}
    # The grid: title bar + 2 rows of input, 2 smoothers, the run, GT (200 px cells + 2 * 2 px borders).
    assert read_image(out / "results_grid.png").shape == (22 + 2 * 204, 5 * 204, 3)
    assert (exp / "full_2x_s0" / "test_predictions_latest").is_dir()
    assert not (exp / "full_s0" / "test_predictions_latest").exists()
    text = (out / "RESULTS.md").read_text()
    assert "| CSGIS-Net full, 2x |" in text and "| L0 (" in text and "### Training length" in text
    assert text.count(make_report.NOTES_MARKER) == 1 and "## Notes" in text
    regions = result["regions"]
    assert regions["smoothing"]["changed_outside"] == 0 and regions["smoothing"]["pixels_outside"] > 0
    inside = regions["smoothing"]["inside"]
    assert inside["strength 1, scale 1"]["psnr"] > inside["input"]["psnr"]  # the shipped model smooths
    assert set(regions["interactive"]["methods"]) == {"grabcut", "random_walker"}
    assert "## Regions: interactive segmentation and region smoothing" in text
    held = result["heldout"]["table"]
    assert {"input", "L0", "FGS", "baseline", "full", "full_2x"} <= set(held)
    assert held["input"]["gray"]["n"] == held["input"]["colour"]["n"] > 0
    assert held["input"]["all"]["n"] == held["input"]["gray"]["n"] + held["input"]["colour"]["n"]
    assert "## Held-out benchmark" in text
    # The classical smoothers were tuned for each blend on that blend's validation images.
    assert result["heldout"]["select_per"] == "blend"
    assert all(set(by) == {"gray", "colour"} for by in result["heldout"]["params"].values())
    assert "chosen for each blend on the validation images of that blend" in text
    lam = {b: result["heldout"]["params"]["l0"][b]["lambda_"] for b in ("gray", "colour")}
    assert f"L0 gray (lambda={lam['gray']:g}), colour (lambda={lam['colour']:g})" in text
    # by blend and kind of structure: the same images, split (every run of this report was scored here)
    kind = result["heldout"]["by_kind"]
    assert {"input", "L0", "full", "full_2x"} <= set(kind) and "### Held-out benchmark by kind of structure" in text
    for label in ("input", "full"):
        for blend in ("gray", "colour"):
            parts = [c for g, c in kind[label].items() if g.startswith(blend + ", ")]
            assert len(parts) == 2 and sum(c["n"] for c in parts) == held[label][blend]["n"]
            mean = sum(c["n"] * c["psnr_paper"] for c in parts) / held[label][blend]["n"]
            assert abs(mean - held[label][blend]["psnr_paper"]) < 1e-9

    # People's notes below the marker survive a rerun; with --no-train nothing is trained and the numbers
    # are read back. Given a copy of full_2x's final weights as the shipped smoother, it names that run.
    (out / "RESULTS.md").write_text(text.replace("(none yet)", "Our reading: full_2x is longer."))
    shipped = tmp_path / "shipped.pth"
    shipped.write_bytes((exp / "full_2x_s0" / "models" / "latest.pth").read_bytes())
    other = tmp_path / "other.pth"  # ... and the same bytes as another shipped file
    other.write_bytes(shipped.read_bytes())
    tiny_plan(tmp_path, demo_root, also_shipped=[str(other)])
    capsys.readouterr()
    assert make_report.main(argv + ["--no-train", "--shipped", str(shipped)]) == 0
    assert "$ " not in capsys.readouterr().out
    again = json.loads((out / "results.json").read_text())
    assert again["rows"] == result["rows"] and again["baselines"] == result["baselines"]
    assert again["shipped"]["run"] == "full_2x_s0" and {"shipped", "shipped, scale 2"} <= set(again["heldout"]["table"])
    # the shipped file is its own row, scored like the runs (here: the same weights as full_2x_s0)
    assert again["shipped_test"]["psnr_paper"]["mean"] == again["runs"]["full_2x_s0"]["test"]["psnr_paper"]["mean"]
    text = (out / "RESULTS.md").read_text()
    assert "Our reading: full_2x is longer." in text and f"`{shipped}` is the final weights of `full_2x_s0`" in text
    also, first = again["also_shipped_test"][str(other)], again["shipped_test"]
    assert {k: also[k] for k in METRICS} == {k: first[k] for k in METRICS}
    assert again["heldout"]["table"][str(other)] == again["heldout"]["table"]["shipped"]
    assert again["heldout"]["by_kind"][str(other)] == again["heldout"]["by_kind"]["shipped"]
    assert "shipped, scale 2" not in again["heldout"]["by_kind"]
    assert f"| shipped `{other}`, scale 2 | " in text and text.count(f"| shipped `{other}` | ") == 3  # test split, held-out, held-out by kind
    ensembled = again["heldout"]["table"]["shipped, self-ensemble"]
    assert ensembled["all"]["n"] == again["heldout"]["table"]["shipped"]["all"]["n"]
    assert ensembled["all"]["psnr_paper"] != again["heldout"]["table"]["shipped"]["all"]["psnr_paper"]
    assert f"| shipped `{shipped}`, self-ensemble | " in text and f"| shipped `{other}`, self-ensemble | " in text
    kept = again["heldout"]["table"]["shipped, keep mean"]
    assert kept["all"]["n"] == ensembled["all"]["n"] and kept != again["heldout"]["table"]["shipped"]
    assert again["heldout"]["by_kind"]["shipped, keep mean"]["all"] == kept["all"]
    assert f"| shipped `{shipped}`, keep mean | " in text and f"| shipped `{other}`, keep mean | " in text
    both = again["heldout"]["table"]["shipped, self-ensemble, keep mean"]
    assert both != ensembled and both != kept and f"| shipped `{other}`, self-ensemble, keep mean | " in text
    post, post_kept = (again["heldout"]["table"][f"shipped, then l0:lambda=0.05{k}"] for k in ("", ", keep mean"))
    assert post != again["heldout"]["table"]["shipped"] and post_kept not in (post, kept)
    assert again["heldout"]["by_kind"]["shipped, then l0:lambda=0.05, keep mean"]["all"] == post_kept["all"]
    assert "shipped, then l0:lambda=0.05" not in again["heldout"]["by_kind"] and again["heldout"]["post"] == "l0:lambda=0.05"
    assert f"| shipped `{other}`, then l0:lambda=0.05, keep mean | " in text and "`--post l0:lambda=0.05`" in text
    assert again["heldout"]["table"]["shipped, self-ensemble, then l0:lambda=0.05, keep mean"] not in (post_kept, both)

    # The config edited after training: the full rows no longer match and are reported missing, never
    # mixed in (baseline pins the edited key with its own override, so it still matches) ...
    config = tmp_path / "tiny.yaml"
    edited = yaml.safe_load(config.read_text())
    edited["loss"]["contrastive"] = 0.5
    config.write_text(yaml.safe_dump(edited))
    short = argv + ["--rows", "baseline", "full", "--seeds", "0"]
    assert make_report.main(short + ["--no-train"]) == 1
    err = capsys.readouterr().err
    assert "full_s0 was trained with another config" in err and "loss.contrastive: 1.0 -> 0.5" in err
    stale = json.loads((out / "results.json").read_text())
    assert stale["failed"] == ["full_s0"] and set(stale["runs"]) == {"baseline_s0"}
    # ... until --retrain-stale retrains them, after moving the old run aside.
    assert make_report.main(short + ["--retrain-stale"]) == 0
    assert set(json.loads((out / "results.json").read_text())["runs"]) == {"baseline_s0", "full_s0"}
    assert load_config(exp / "full_s0" / "config.yaml").loss.contrastive == 0.5
    assert len(list(exp.glob("full_s0_archived_*"))) == 1


def test_a_row_is_one_entry_and_bad_definitions_are_one_line(demo_root, tmp_path, capsys):
    plan = make_report.load_plan(str(tiny_plan(tmp_path, demo_root)))
    assert [r.name for r in plan.rows] == ["baseline", "full", "full_2x"]
    assert [r.name for r in make_report.planned_runs(plan)] == ["baseline_s0", "full_s0", "full_2x_s0",
                                                                "baseline_s1", "full_s1"]
    # A training config is not a report definition; rows named elsewhere must exist; keys are checked.
    for bad, message in [(str(ROOT / "configs" / "demo.yaml"), "needs a list of 'rows'"),
                         (str(tiny_plan(tmp_path, demo_root, "a.yaml", verdicts=["nope"])), "does not define: ['nope']"),
                         (str(tiny_plan(tmp_path, demo_root, "b.yaml", colour="red")), "unknown key(s) ['colour']"),
                         (str(tiny_plan(tmp_path, demo_root, "c.yaml", heldout={"data": "x", "post": "l0:lamda=1"})),
                          "heldout.post: --post: 'l0' has no setting 'lamda'")]:
        assert make_report.main(["--config", bad, "--no-train"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines
    assert make_report.main(["--config", str(tiny_plan(tmp_path, demo_root)), "--rows", "fool"]) == 2
    assert "has no row(s) ['fool']" in capsys.readouterr().err


def test_carry_over_reports_runs_trained_elsewhere_with_their_recorded_numbers(demo_root, tmp_path, capsys, monkeypatch):
    """--carry-over: a run whose folder is not on this machine keeps its row, with the numbers the
    earlier results.json holds, while its training settings match its row; otherwise it is missing."""
    plan = tiny_plan(tmp_path, demo_root, seeds=[0], verdicts=["full"], training_length=[], train_split=["full"],
                     grid={}, regions={}, heldout={"data": str(tmp_path / "heldout"), "size": "tiny"})
    exp, out = tmp_path / "exp", tmp_path / "docs"
    argv = ["--config", str(plan), "--workers", "1", "--rows", "baseline", "full"]
    assert make_report.main(argv) == 0
    first = json.loads((out / "results.json").read_text())
    assert first["runs"]["full_s0"]["config"]["loss.contrastive"] == 1.0 and "name" not in first["runs"]["full_s0"]["config"]
    (exp / "full_s0").rename(tmp_path / "moved_full_s0")  # trained on another machine: not here

    assert make_report.main(argv + ["--no-train"]) == 1  # without --carry-over the row is missing
    missing = json.loads((out / "results.json").read_text())
    assert missing["failed"] == ["full_s0"] and "full" not in missing["rows"] and "full" not in missing["heldout"]["table"]
    (out / "results.json").write_text(json.dumps(first))

    # A new machine has no experiments folder: the classical smoothers' scores come from the copies the
    # report kept beside results.json, not from another hour of grids.
    assert sorted(p.name for p in (out / "baselines").iterdir()) == ["baselines.json", "baselines_heldout.json"]
    for name in ("baselines.json", "baselines_heldout.json"):
        (exp / name).unlink()

    def refuse(*args, **kwargs):
        raise AssertionError("the classical smoothers ran again")
    monkeypatch.setattr(make_report.evaluation, "run_baselines", refuse)
    capsys.readouterr()
    assert make_report.main(argv + ["--no-train", "--carry-over"]) == 0
    printed = capsys.readouterr().out
    assert "carried over from" in printed and f"carried over from {out / 'baselines' / 'baselines_heldout.json'}" in printed
    carried = json.loads((out / "results.json").read_text())
    assert carried["baselines"].pop("carried_from") == str(out / "baselines" / "baselines.json")
    assert carried["heldout"].pop("carried_from") == str(out / "baselines" / "baselines_heldout.json")
    first_base, first_heldout = dict(first["baselines"]), dict(first["heldout"])
    assert first_base.pop("carried_from") is None and first_heldout.pop("carried_from") is None
    assert carried["baselines"] == first_base and carried["heldout"] == {**first_heldout, "by_kind": carried["heldout"]["by_kind"]}
    assert "Classical smoothers carried over from" in (out / "RESULTS.md").read_text()
    assert carried["failed"] == [] and carried["carried_over"]["runs"] == ["full_s0"]
    for key in ("rows", "verdicts"):
        assert carried[key] == first[key], key
    assert carried["by_image_group"]["full"] == first["by_image_group"]["full"]
    assert carried["training_split"] == first["training_split"] and set(first["training_split"]) == {"input", "full"}
    assert carried["heldout"]["table"]["full"] == first["heldout"]["table"]["full"]
    assert "full" in first["heldout"]["by_kind"] and "full" not in carried["heldout"]["by_kind"]  # per blend only
    assert carried["runs"]["full_s0"]["test"] == first["runs"]["full_s0"]["test"]
    assert carried["runs"]["full_s0"]["config_checked"] is True
    text = (out / "RESULTS.md").read_text()
    assert "Carried over from" in text and "full_s0" in text and "predates recorded training settings" not in text
    # With training on, a run that is carried over is not trained again.
    assert make_report.main(argv + ["--carry-over"]) == 0
    assert not (exp / "full_s0").exists() and json.loads((out / "results.json").read_text())["rows"] == first["rows"]

    # A file from before training settings were recorded: matched by the row's definition, and said so.
    older = json.loads(json.dumps(first))
    for record in older["runs"].values():
        del record["config"], record["groups"]
    (out / "results.json").write_text(json.dumps(older))
    assert make_report.main(argv + ["--no-train", "--carry-over"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["runs"]["full_s0"]["config_checked"] is False and again["rows"] == first["rows"]
    assert again["by_image_group"]["full"] == first["by_image_group"]["full"]
    assert "predates recorded training settings for full_s0" in (out / "RESULTS.md").read_text()

    # The row's config edited since: the recorded settings differ, so the run is not carried over.
    (out / "results.json").write_text(json.dumps(first))
    config = tmp_path / "tiny.yaml"
    edited = yaml.safe_load(config.read_text())
    edited["loss"]["l1"] = 2.0
    config.write_text(yaml.safe_dump(edited))
    capsys.readouterr()
    assert make_report.main(argv + ["--no-train", "--carry-over", str(out / "results.json"), "--rows", "full"]) == 1
    err = capsys.readouterr().err
    assert "full_s0 in" in err and "loss.l1: 1.0 -> 2.0" in err and "not carried over" in err
    assert "no finished run to report" in err  # full_s0 was the only run asked for


def test_demo_report_rows_ask_for_the_runs_the_report_was_trained_with():
    """configs/reports/demo.yaml resolves to the settings of the report's runs: the demo ablation
    files, 2x/4x/8x as scaled epochs and milestones, ten times the semantic weight, the rich data."""
    plan = make_report.load_plan(str(ROOT / "configs" / "reports" / "demo.yaml"))
    runs = {r.name: r for r in make_report.planned_runs(plan)}
    first_only = {"full_trainbn", "full_2x", "full_4x", "full_8x", "rich_8x", "rich_gram"}
    assert set(runs) == {f"{row}_s{s}" for row in ("baseline", "contrastive", "semantic", "full", "full_seg10x", "rich",
                                                   "rich_baseline", "rich_contrastive", "rich_semantic")
                         for s in (0, 1)} | {f"{row}_s0" for row in first_only}
    demo = load_config(ROOT / "configs" / "demo.yaml")

    def resolved(name):
        return load_config(runs[name].row.path, make_report.run_overrides(runs[name], plan))
    assert (resolved("baseline_s1").loss.contrastive, resolved("baseline_s1").loss.segmentation) == (0, 0)
    assert resolved("contrastive_s0").loss.segmentation == 0 and resolved("semantic_s0").loss.contrastive == 0
    eight = resolved("full_8x_s0").train
    assert (eight.epochs, eight.milestones) == (8 * demo.train.epochs, [8 * m for m in demo.train.milestones])
    assert resolved("full_seg10x_s0").loss.segmentation == pytest.approx(10 * demo.loss.segmentation)
    assert resolved("full_trainbn_s0").train.freeze_bn is False and demo.train.freeze_bn is True
    rich = resolved("rich_s0")
    assert rich.data.format == "online" and rich.data.root == "data/rich" and rich.model == demo.model
    assert resolved("rich_8x_s0").train.epochs == 8 * rich.train.epochs
    assert (resolved("rich_baseline_s0").loss.contrastive, resolved("rich_baseline_s0").loss.segmentation) == (0, 0)
    assert resolved("rich_gram_s0").loss.gram_normalize and not rich.loss.gram_normalize
    assert (resolved("rich_contrastive_s1").loss.contrastive, resolved("rich_contrastive_s1").loss.segmentation) \
        == (rich.loss.contrastive, 0)
    assert (resolved("rich_semantic_s1").loss.contrastive, resolved("rich_semantic_s1").loss.segmentation) \
        == (0, rich.loss.segmentation)


def test_staleness_ignores_where_a_run_lives(demo_root, tmp_path):
    plan = make_report.load_plan(str(tiny_plan(tmp_path, demo_root)))
    run = next(r for r in make_report.planned_runs(plan) if r.name == "full_2x_s0")
    run.dir.mkdir(parents=True)
    cfg = load_config(run.row.path, make_report.run_overrides(run, plan))
    saved = to_dict(cfg)
    saved["name"], saved["experiments_dir"] = "renamed", "/elsewhere"  # a folder that was moved or renamed
    (run.dir / "config.yaml").write_text(yaml.safe_dump(saved))
    assert make_report.stale_keys(run, plan) == []
    saved["train"]["epochs"] = 1  # trained at the 1x budget: not this row's run
    (run.dir / "config.yaml").write_text(yaml.safe_dump(saved))
    assert make_report.stale_keys(run, plan) == ["train.epochs: 1 -> 4"]


def test_scores_cached_on_another_build_of_the_data_are_not_used(tmp_path, monkeypatch):
    """A cache of a smoother file's or the classical smoothers' scores holds the dataset.json identity
    of the build it scored (and the latter the grids it chose from); a rebuild of the same folder
    (another version, seed or size) is scored again."""
    from types import SimpleNamespace
    data = tmp_path / "data"
    data.mkdir()

    def build(version):
        (data / "dataset.json").write_text(json.dumps({"name": "d", "builder": "b", "seed": 0, "complete": True,
                                                       "config": {"version": version}}))
    calls = []

    def fake(*args, **kwargs):
        calls.append(args[0])
        return {"images": [], "methods": {"m": {}}, "filters": ["l0"], "data": str(data)}
    monkeypatch.setattr(make_report.evaluation, "evaluate_model", fake)
    monkeypatch.setattr(make_report.evaluation, "run_baselines", fake)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    plan = SimpleNamespace(experiments=str(tmp_path / "exp"), select_on="val")
    (tmp_path / "exp").mkdir()
    build(1)
    for _ in range(2):  # the second call reads the cache
        make_report.score_weights(weights, str(data), "test", tmp_path / "scores.json", "m")
        make_report.baselines(plan, str(data), ["l0"], workers=1)
    assert len(calls) == 2
    build(2)
    make_report.score_weights(weights, str(data), "test", tmp_path / "scores.json", "m")
    make_report.baselines(plan, str(data), ["l0"], workers=1)
    assert len(calls) == 4
    assert json.loads((tmp_path / "scores.json").read_text())["dataset"]["config"] == {"version": 2}
    # The classical smoothers' cache also holds the validation grids it chose from: other grids, new run.
    from csgis.filters import PARAM_GRIDS
    make_report.baselines(plan, str(data), ["l0"], workers=1)
    assert len(calls) == 4
    monkeypatch.setitem(PARAM_GRIDS, "l0", [{"lambda_": 0.5}, {"lambda_": 0.9}])
    make_report.baselines(plan, str(data), ["l0"], workers=1)
    assert len(calls) == 5


def test_kept_classical_scores_are_used_only_for_the_same_images_code_and_packages(tmp_path, monkeypatch):
    """--carry-over's copies of the classical smoothers' cache (<out>/baselines/) are read only under an
    equal baseline_key: a changed byte of a validation GT, of the filters' code or another package
    version means they are computed again."""
    from types import SimpleNamespace
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.csv").write_text("id,split,input,gt,edge,seg,over\n"
                                       "a,test,a_in.png,a_gt.png,,,\nb,val,b_in.png,b_gt.png,,,\n")
    for name in ("a_in", "a_gt", "b_in", "b_gt"):
        (data / f"{name}.png").write_bytes(name.encode())
    calls = []

    def fake(*args, **kwargs):
        calls.append(args[0])
        return {"images": [], "methods": {}, "filters": {}}
    monkeypatch.setattr(make_report.evaluation, "run_baselines", fake)
    source = tmp_path / "filters_source.py"
    source.write_text("v = 1\n")
    plan = SimpleNamespace(experiments=str(tmp_path / "exp"), select_on="val")
    kept = tmp_path / "docs" / "baselines"
    # The key does not depend on where the repository lives: a fresh clone elsewhere reads the copies.
    keys = []
    for clone, text in (("a", "v = 1\n"), ("b", "v = 1\n"), ("c", "v = 3\n")):
        (tmp_path / clone / "csgis").mkdir(parents=True)
        (tmp_path / clone / "csgis" / "filters.py").write_text(text)
        monkeypatch.setattr(make_report, "ROOT", tmp_path / clone)
        keys.append(make_report.baseline_key(str(data), ["l0"], None, ("test", "val")))
    assert keys[0] == keys[1] != keys[2]
    monkeypatch.setattr(make_report, "ROOT", ROOT)
    monkeypatch.setattr(make_report, "BASELINE_SOURCES", ("csgis/filters.py", str(source)))

    def new_machine():
        """The experiments folder gone, the report's kept copy there."""
        kept.mkdir(parents=True, exist_ok=True)
        (tmp_path / "exp" / "baselines.json").replace(kept / "baselines.json")

    def run():
        return make_report.baselines(plan, str(data), ["l0"], workers=1, committed=kept)
    run()
    new_machine()
    assert run()["carried_from"] == str(kept / "baselines.json") and len(calls) == 1
    assert run()["carried_from"] == str(kept / "baselines.json") and len(calls) == 1  # now in exp, still said
    for change in (lambda: (data / "b_gt.png").write_bytes(b"other"), lambda: source.write_text("v = 2\n"),
                   lambda: monkeypatch.setattr(np, "__version__", "0.0")):
        new_machine()
        n = len(calls)
        change()
        assert "carried_from" not in run() and len(calls) == n + 1
