"""Print the README's table of config keys, generated from csgis/config.py (defaults + comments).

Usage: python scripts/config_table.py > /tmp/table.md   (then paste into README.md)
The test suite checks that README.md names every key of csgis.config.Config.
"""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from csgis.config import Config, flatten  # noqa: E402

SECTIONS = {"ModelConfig": "model", "SegmenterConfig": "segmenter", "LossConfig": "loss",
            "DataConfig": "data", "TrainConfig": "train", "Config": ""}


def comments() -> dict:
    """Map 'section.key' -> trailing comment of its line in config.py."""
    path = ROOT / "csgis" / "config.py"
    lines = path.read_text().splitlines()
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name in SECTIONS:
            prefix = SECTIONS[node.name]
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    line = lines[stmt.lineno - 1]
                    note = line.split("#", 1)[1].strip() if "#" in line else ""
                    out[(prefix + "." if prefix else "") + stmt.target.id] = note
    return out


def main() -> None:
    notes = comments()
    print("| key | default | meaning |")
    print("|---|---|---|")
    for key, value in flatten(Config()).items():
        shown = '""' if value == "" else value
        note = notes.get(key, "").replace(" | ", " / ")
        print(f"| `{key}` | `{shown}` | {note} |")


if __name__ == "__main__":
    main()
