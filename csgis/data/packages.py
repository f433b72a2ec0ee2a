"""Debian's free art packages as data sources: which files each installed package holds, their
category (its folder) and licence, and which packages are for training and which are held out.

Nothing is downloaded: the files are those `apt-get install PACKAGE` put on this machine, found
through dpkg's own file lists (`/var/lib/dpkg/info/<package>.list`), so that a folder two packages
share (GIMP's patterns folder holds gimp-data's and gimp-data-extras' files) never mixes them.

Roles: *art* (clip art and stamps: structure images, with a class from their category folder),
*photos* (wallpapers: photo crops and textured regions) and *patterns* (GIMP's tiling textures).
Training builders read TRAIN_PACKAGES only; the benchmark (dataset_utils/make_art_bench.py) reads
BENCH_PACKAGES only, so whole packages are held out (tests/test_art_data.py checks both).
"""
from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

DPKG_INFO = Path(os.environ.get("CSGIS_DPKG_INFO", "/var/lib/dpkg/info"))

PACKAGES = {  # name -> role
    "openclipart-png": "art",
    "tuxpaint-stamps-default": "art",
    "mate-backgrounds": "photos",
    "plasma-workspace-wallpapers": "photos",
    "ukui-wallpapers": "photos",
    "gimp-data": "patterns",
    "gimp-data-extras": "patterns",
}
TRAIN_PACKAGES = ("openclipart-png", "mate-backgrounds", "plasma-workspace-wallpapers", "ukui-wallpapers",
                  "gimp-data")
BENCH_PACKAGES = ("tuxpaint-stamps-default", "gimp-data-extras")
EXTENSIONS = {"art": (".png",), "photos": (".jpg", ".jpeg", ".png"), "patterns": (".pat",)}

# Classes of the structure images' label maps: one list for both art packages, so a segmenter
# trained on one is scored on the other. 0 is the background a collage is laid on.
ART_CLASSES = ("background", "animal", "person", "food", "plant", "vehicle", "building", "symbol", "object")
# Category folder -> class; folders not named here are "object" (tools, office, household, ...).
CATEGORY_CLASSES = {
    "animals": "animal", "people": "person", "food": "food", "plants": "plant", "transportation": "vehicle",
    "vehicles": "vehicle", "buildings": "building", "town": "building", "signs_and_symbols": "symbol",
    "shapes": "symbol", "symbols": "symbol", "logos": "symbol", "buttons": "symbol", "geography": "symbol",
    "town/roadsigns": "symbol",
}
# Where each art package keeps its category folders, and what it holds that is not art for us.
_CATEGORY_ROOTS = {"openclipart-png": "/openclipart/png/", "tuxpaint-stamps-default": "/tuxpaint/stamps/"}
_EXCLUDED = {"openclipart-png": ("/stars/", "/icons/")}
_SIZE_SUFFIX = re.compile(r"_\d+x\d+$")


class PackageError(RuntimeError):
    """A package is not installed (the message says how to install it)."""


def install_hint(packages) -> str:
    return "install with: apt-get install " + " ".join(packages)


def missing_packages(packages, dpkg_info: str | os.PathLike = DPKG_INFO) -> list[str]:
    """Those of `packages` that dpkg does not list as installed."""
    return [p for p in packages if not (Path(dpkg_info) / f"{p}.list").is_file()]


def require(packages, dpkg_info: str | os.PathLike = DPKG_INFO) -> None:
    """PackageError naming the missing packages and the apt-get line that installs them."""
    missing = missing_packages(packages, dpkg_info)
    if missing:
        raise PackageError(f"Debian package(s) not installed: {', '.join(missing)}; {install_hint(missing)}")


def package_files(package: str, dpkg_info: str | os.PathLike = DPKG_INFO) -> list[Path]:
    """The installed files of `package` that serve its role, sorted. Wallpapers kept at several
    resolutions count once (the largest file of a wallpaper: plasma's <Name>/contents/images/WxH,
    MATE's Name_WxH); screenshots, openclipart's stars and icons are left out."""
    role = PACKAGES[package]
    require([package], dpkg_info)
    with open(Path(dpkg_info) / f"{package}.list", encoding="utf-8", errors="replace") as f:
        listed = [line.rstrip("\n") for line in f]
    files = [Path(p) for p in listed if p.lower().endswith(EXTENSIONS[role])
             and not any(x in p for x in _EXCLUDED.get(package, ())) and "/doc/" not in p and os.path.isfile(p)]
    if role == "art":
        files = [p for p in files if _CATEGORY_ROOTS[package] in str(p)]
    if role == "photos":
        best: dict[str, Path] = {}
        for p in files:
            if p.stem == "screenshot":
                continue
            key = str(p.parent.parent.parent) if p.parent.name == "images" else str(p.with_name(_SIZE_SUFFIX.sub("", p.stem)))
            if key not in best or p.stat().st_size > best[key].stat().st_size:
                best[key] = p
        files = list(best.values())
    return sorted(files)


def category(package: str, path: str | os.PathLike) -> str:
    """An art file's category folder below its package's root ('animals', 'town/roadsigns')."""
    tail = str(path).split(_CATEGORY_ROOTS[package], 1)[-1]
    parts = tail.split("/")[:-1]
    return "/".join(parts[:2]) if parts else ""


def art_class(package: str, path: str | os.PathLike) -> int:
    """The ART_CLASSES index of an art file, from its category folder (the first level, unless the
    two-level folder is named in CATEGORY_CLASSES)."""
    cat = category(package, path)
    name = CATEGORY_CLASSES.get(cat) or CATEGORY_CLASSES.get(cat.split("/")[0], "object")
    return ART_CLASSES.index(name)


def _copyright_paragraphs(package: str) -> list[tuple[list[str], str]]:
    """(file patterns, licence) of each 'Files:' paragraph of the package's machine-readable
    copyright file (DEP-5); [] when it has none."""
    path = Path("/usr/share/doc") / package / "copyright"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:(.*(?:\n[ \t].*)*)", block, re.M)
        licence = re.search(r"^License:[ \t]*(.*)", block, re.M)
        if files and licence:
            patterns = files.group(1).split()
            if not all(p.startswith("debian/") for p in patterns):
                paragraphs.append((patterns, licence.group(1).strip()))
    return paragraphs


_LICENCES: dict[str, list] = {}
_FREE_TEXT = {"openclipart-png": "public domain (Creative Commons Public Domain Dedication)"}


def licence(package: str, path: str | os.PathLike) -> str:
    """The licence of an installed file as its package's copyright file states it (the last DEP-5
    paragraph whose pattern matches the file's path wins, as the format says)."""
    if package in _FREE_TEXT:
        return _FREE_TEXT[package]
    if package not in _LICENCES:
        _LICENCES[package] = _copyright_paragraphs(package)
    found = None
    for patterns, name in _LICENCES[package]:
        if any(fnmatch.fnmatch(str(path), "*/" + p) or p == "*" for p in patterns):
            found = name
    return found or f"see /usr/share/doc/{package}/copyright"
