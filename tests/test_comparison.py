"""scripts/make_comparison.py: side-by-side grids of chosen or picked samples."""
import make_comparison

from csgis.data.manifest import read_manifest
from csgis.io import read_image, write_image


def test_ids_choose_the_rows_in_order_and_an_unknown_id_is_one_line(demo_root, tmp_path, capsys):
    rows = read_manifest(demo_root, split="test")
    method = tmp_path / "gt_as_result"
    for row in rows:
        write_image(method / f"{row['id']}.png", read_image(demo_root / row["gt"]))
    ids = [rows[-1]["id"], rows[0]["id"]]
    args = ["--data", str(demo_root), "--split", "test", "--method", f"copy={method}", "--cell", "64"]
    assert make_comparison.main(args + ["--out", str(tmp_path / "two.png"), "--ids", ",".join(ids)]) == 0
    assert capsys.readouterr().out.rstrip().endswith(", ".join(ids))
    assert make_comparison.main(args + ["--out", str(tmp_path / "one.png"), "--ids", ids[0]]) == 0
    two, one = read_image(tmp_path / "two.png"), read_image(tmp_path / "one.png")
    assert two.shape[1] == one.shape[1] and two.shape[0] > one.shape[0]  # a row per id
    assert make_comparison.main(args + ["--out", str(tmp_path / "x.png"), "--ids", "nope"]) == 2
    assert "no sample 'nope'" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
