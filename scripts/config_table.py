"""Print the table of config keys in docs/CONFIG.md, generated from csgis/config.py (defaults + comments).

Usage: python scripts/config_table.py            print the table
       python scripts/config_table.py --update   rewrite the table in docs/CONFIG.md between its markers
The test suite checks that docs/CONFIG.md holds exactly this table.
"""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from csgis.config import Config, flatten

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


START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"
DOC = "docs/CONFIG.md"


def table() -> str:
    notes = comments()
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, value in flatten(Config()).items():
        shown = '""' if value == "" else value
        note = notes.get(key, "").replace(" | ", " / ")
        lines.append(f"| `{key}` | `{shown}` | {note} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if "--update" not in sys.argv[1:]:
        print(table(), end="")
        return
    doc = ROOT / DOC
    text = doc.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    doc.write_text(head + START + "\n" + table() + END + tail)


if __name__ == "__main__":
    main()
