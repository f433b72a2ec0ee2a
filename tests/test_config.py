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


def test_config_table_doc_is_current():
    import importlib.util

    spec = importlib.util.spec_from_file_location("config_table", ROOT / "scripts" / "config_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = (ROOT / module.DOC).read_text()
    assert module.START + "\n" + module.table() + module.END in doc, \
        f"{module.DOC}: config table is stale: run python scripts/config_table.py --update"
    missing = [k for k in flatten(Config()) if f"| `{k}` |" not in doc]
    assert not missing, f"{module.DOC}: config table lacks: {missing}"


def test_base_chain_merges_mappings_and_replaces_other_values(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "root.yaml").write_text("name: root\ntrain:\n  epochs: 7\n  milestones: [1, 2, 3]\nloss:\n  l1: 2.0\n")
    # `base` is relative to the including file's folder, and chains.
    (tmp_path / "sub" / "mid.yaml").write_text("base: ../root.yaml\ntrain:\n  milestones: [5]\n")
    (tmp_path / "sub" / "leaf.yaml").write_text("base: mid.yaml\nname: leaf\nloss:\n  ssim: 0.5\n")
    cfg = load_config(tmp_path / "sub" / "leaf.yaml", ["train.epochs=9"])
    assert cfg.name == "leaf" and cfg.train.epochs == 9
    assert cfg.train.milestones == [5]                      # a list replaces, it is not merged
    assert (cfg.loss.l1, cfg.loss.ssim) == (2.0, 0.5)         # sibling keys of a mapping survive
    assert cfg.loss.edge == Config().loss.edge               # untouched keys keep the defaults
    # What a run saves is the resolved config: no base key, and it reloads to the same thing.
    save_config(cfg, tmp_path / "resolved.yaml")
    assert "base" not in (tmp_path / "resolved.yaml").read_text()
    assert flatten(load_config(tmp_path / "resolved.yaml")) == flatten(cfg)


def test_base_errors_name_the_files(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"include each other.*a.yaml -> .*b.yaml -> .*a.yaml"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: gone.yaml\n")
    with pytest.raises(ConfigError, match=r"gone.yaml.*the 'base' of .*c.yaml"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base: [x]\n")
    with pytest.raises(ConfigError, match="'base' must name a config file"):
        load_config(tmp_path / "d.yaml")
    # A bad key in a base file is reported like any other bad key.
    (tmp_path / "e.yaml").write_text("train:\n  epochz: 1\n")
    (tmp_path / "f.yaml").write_text("base: e.yaml\n")
    with pytest.raises(ConfigError, match="train.epochz"):
        load_config(tmp_path / "f.yaml")
    # `base` only means something in a file; in a dict or an override it is an unknown key.
    with pytest.raises(ConfigError, match="unknown config key 'base'"):
        from_dict({"base": "x.yaml"})


def test_an_empty_or_null_section_in_a_child_keeps_the_base_section(tmp_path):
    from csgis.config import load_config
    (tmp_path / "base.yaml").write_text("train:\n  lr: 0.005\n  epochs: 7\nmodel:\n  width: 16\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntrain:\n  # lr: 0.1\nmodel: ~\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.train.lr, cfg.train.epochs, cfg.model.width) == (0.005, 7, 16)


def test_a_key_written_twice_is_refused_with_both_line_numbers(tmp_path):
    import pytest

    from csgis.config import ConfigError, load_config
    (tmp_path / "twice.yaml").write_text("train:\n  lr: 0.1\nmodel:\n  width: 8\ntrain:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"twice.yaml.*key 'train' appears twice.*lines 1 and 5"):
        load_config(tmp_path / "twice.yaml")


def test_a_mapping_or_list_for_a_single_value_key_is_refused():
    import pytest

    from csgis.config import ConfigError, load_config
    for override, key in (("name={x: 1}", "name"), ("data.root=[a, b]", "data.root")):
        with pytest.raises(ConfigError, match=f"config key '{key}': expected a single value"):
            load_config(None, [override])
