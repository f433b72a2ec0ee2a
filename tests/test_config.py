import re
from pathlib import Path

import pytest

from csgis.config import Config, ConfigError, flatten, from_dict, load_config, save_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_match_spec():
    cfg = Config()
    assert (cfg.model.width, cfg.model.descriptor_blocks, cfg.model.coarse_blocks, cfg.model.refine_blocks) == (64, 12, 3, 6)
    assert cfg.train.lr == 1e-3 and cfg.train.milestones == [40, 80, 120, 150, 190] and cfg.train.gamma == 0.5
    assert cfg.train.epochs == 150 and cfg.train.batch_size == 8 and cfg.data.patch_size == 128
    assert (cfg.loss.margin_pixel, cfg.loss.margin_vgg) == (0.3, 0.04)
    assert cfg.loss.seg_input == "prediction" and cfg.segmenter.eval_mode is True


def test_overrides_and_types():
    cfg = load_config(None, ["train.lr=5e-4", "loss.seg_input=input", "data.brightness=[0.5,1.5]",
                             "deterministic=true", "model.width=8"])
    assert cfg.train.lr == 5e-4 and isinstance(cfg.train.lr, float)
    assert cfg.loss.seg_input == "input" and cfg.data.brightness == [0.5, 1.5]
    assert cfg.deterministic is True and cfg.model.width == 8


@pytest.mark.parametrize("override, key", [("train.lrr=1", "train.lrr"), ("nope=1", "nope"),
                                           ("model.depth.x=1", "model.depth")])
def test_unknown_key_is_named(override, key):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
        load_config(None, [override])


def test_bad_values():
    with pytest.raises(ConfigError, match="loss.seg_input"):
        from_dict({"loss": {"seg_input": "gt"}})
    with pytest.raises(ConfigError, match="model.width"):
        from_dict({"model": {"width": "wide"}})
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.lr"])


def test_file_round_trip(tmp_path):
    cfg = load_config(None, ["name=x", "train.epochs=3"])
    save_config(cfg, tmp_path / "c.yaml")
    assert flatten(load_config(tmp_path / "c.yaml")) == flatten(cfg)
    (tmp_path / "bad.yaml").write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*train.epochz"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_configs_load():
    paths = sorted((ROOT / "configs").glob("*.yaml"))
    assert paths, "configs/ holds no YAML files"
    for p in paths:
        load_config(p)


def test_readme_config_table_is_current():
    import importlib.util

    spec = importlib.util.spec_from_file_location("config_table", ROOT / "scripts" / "config_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text()
    assert module.START + "\n" + module.table() + module.END in readme, \
        "README config table is stale: run python scripts/config_table.py --update"
    missing = [k for k in flatten(Config()) if f"| `{k}` |" not in readme]
    assert not missing, f"README config table lacks: {missing}"
