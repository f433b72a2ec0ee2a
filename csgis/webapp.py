"""The interactive page of app.py: mark regions on an image, smooth them, download the result.

The page (Gradio) is a thin layer over `Editor`, which holds one image's work and can be used
without it: the clicks (include / exclude discs) and brushed strokes, the region they give under the
chosen method (csgis.interactive, or the segmenter's classes), and the smoothed image, computed
once per image, strength and scale and cached, so that changing the region only re-blends
(csgis.regions). The result is what `show.py --mask <the downloaded mask> --feather F --strength S
--scale C` writes for the same image.
"""

import atexit
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from csgis import interactive, regions
from csgis.inference import RECOMMENDED_POST

METHODS = {
    "GrabCut (clicks and strokes)": "grabcut",
    "random walker (clicks and strokes)": "random_walker",
    "click an object (segmenter)": "click_object",
    "classes (segmenter)": "classes",
    "whole image": "whole",
}
INCLUDE_COLOUR, EXCLUDE_COLOUR, REGION_COLOUR = (40, 220, 60), (230, 40, 40), (60, 120, 255)


@dataclass
class Editor:
    """One image's work on the page."""
    smoother: object
    segmenter: object = None
    class_names: list[str] = field(default_factory=list)
    device: str = "cpu"
    image: np.ndarray | None = None
    clicks: list[tuple[int, int, bool, int]] = field(default_factory=list)  # row, col, include, radius
    painted: tuple[np.ndarray, np.ndarray] | None = None  # (include, exclude) brushed on the Brush tab
    _cache: dict = field(default_factory=dict)
    _labels: np.ndarray | None = None

    def load(self, image: np.ndarray) -> None:
        """A new image (H, W, 3 uint8, or anything read_image would convert): no clicks, no cache."""
        from csgis.io import to_uint8_rgb
        if image is None or not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
            raise ValueError("this file is not an image")
        if image.dtype != np.uint8 or image.ndim == 2 or image.shape[2] != 3:
            image = to_uint8_rgb(image if image.ndim == 2 or image.shape[2] != 3 else image[..., ::-1])
        self.image, self.clicks, self._cache, self._labels = np.ascontiguousarray(image), [], {}, None
        self.painted = None

    def click(self, x: int, y: int, include: bool, radius: int) -> None:
        if self.image is None:
            raise ValueError("open an image first")
        h, w = self.image.shape[:2]
        self.clicks.append((min(max(int(y), 0), h - 1), min(max(int(x), 0), w - 1), bool(include), int(radius)))

    def paint(self, layers: list[np.ndarray]) -> None:
        """Brushed strokes (RGBA layers the size of the image): green marks include, red exclude."""
        if self.image is None:
            raise ValueError("open an image first")
        include = np.zeros(self.image.shape[:2], bool)
        exclude = np.zeros(self.image.shape[:2], bool)
        for layer in layers or []:
            layer = np.asarray(layer)
            if layer.shape[:2] != self.image.shape[:2] or layer.ndim != 3 or layer.shape[2] < 3:
                continue  # not drawn on this image
            alpha = layer[..., 3] > 0 if layer.shape[2] == 4 else layer[..., :3].any(axis=2)
            green = layer[..., 1].astype(int) > layer[..., 0].astype(int)
            include |= alpha & green
            exclude |= alpha & ~green
        self.painted = (include, exclude)

    def strokes(self) -> tuple[np.ndarray, np.ndarray]:
        include, exclude = np.zeros(self.image.shape[:2], np.uint8), np.zeros(self.image.shape[:2], np.uint8)
        for y, x, positive, radius in self.clicks:
            cv2.circle(include if positive else exclude, (x, y), max(0, radius), 1, -1)
        include, exclude = include.astype(bool), exclude.astype(bool)
        if self.painted is not None:
            include, exclude = include | self.painted[0], exclude | self.painted[1]
        return include, exclude

    def labels(self) -> np.ndarray:
        if self.segmenter is None:
            raise ValueError("this method needs a segmenter: start the page with --segmenter CKPT")
        if self._labels is None:
            self._labels = regions.segment(self.segmenter, self.image, self.device)
        return self._labels

    def region(self, method: str, classes: list[str] | None = None) -> np.ndarray:
        """The (H, W) bool region of the current clicks under `method` (a value of METHODS)."""
        if self.image is None:
            raise ValueError("open an image first")
        if method == "whole":
            return np.ones(self.image.shape[:2], bool)
        if method == "classes":
            if not classes:
                raise ValueError("choose at least one class")
            return regions.class_mask(self.labels(), regions.class_ids(self.class_names, classes))
        include, exclude = self.strokes()
        if not include.any():
            raise ValueError("click on the image (or brush on the Brush tab) to mark what to smooth")
        if method == "click_object":
            region = np.zeros(include.shape, bool)
            for y, x, positive, _ in self.clicks:
                if positive:
                    region |= interactive.click_object(self.labels(), (y, x))
            return region & ~exclude
        return {"grabcut": interactive.grabcut, "random_walker": interactive.random_walker}[method](
            self.image, include, exclude)

    def smoothed(self, strength: float, scale: float, progress=None, keep_mean: bool = False,
                 post: str | None = None) -> np.ndarray:
        """The whole image smoothed at this strength and scale, with a classical smoother run on the
        network's result (`post`, show.py --post) and shifted to the input's mean colour with keep_mean
        (cached: region changes only re-blend); progress(done, total) reports tiles of large images."""
        key = (round(float(strength), 4), round(float(scale), 4), bool(keep_mean), post or None)
        if key not in self._cache:
            self._cache[key] = regions.smooth_strength(self.smoother, self.image, key[0], key[1], device=self.device,
                                                       progress=progress, keep_mean=key[2], post=key[3])
        return self._cache[key]

    def result(self, region: np.ndarray, feather_px: float, strength: float, scale: float, progress=None,
               keep_mean: bool = False, post: str | None = None) -> np.ndarray:
        return regions.blend(self.image, self.smoothed(strength, scale, progress, keep_mean, post),
                             regions.feather(region, feather_px))

    def overlay(self, region: np.ndarray | None = None) -> np.ndarray:
        """The image with the region tinted and the clicks drawn, for the page."""
        view = self.image.astype(np.float32)
        if region is not None:
            view[region] = 0.6 * view[region] + 0.4 * np.array(REGION_COLOUR, np.float32)
            edge = cv2.morphologyEx(region.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
            view[edge] = REGION_COLOUR
        if self.painted is not None:
            view[self.painted[0]] = INCLUDE_COLOUR
            view[self.painted[1]] = EXCLUDE_COLOUR
        view = view.astype(np.uint8)
        for y, x, positive, radius in self.clicks:
            cv2.circle(view, (x, y), max(2, radius), INCLUDE_COLOUR if positive else EXCLUDE_COLOUR, -1)
        return view

    def key(self) -> str:
        return hashlib.sha1(self.image.tobytes()).hexdigest()[:12] if self.image is not None else "none"


def save_downloads(result: np.ndarray, region: np.ndarray, folder: str | os.PathLike) -> list[str]:
    """result.png and mask.png in `folder` (paths for the page's download box)."""
    from csgis.io import write_image
    folder = Path(folder)
    write_image(folder / "result.png", result)
    write_image(folder / "mask.png", regions.mask_image(region))
    return [str(folder / "result.png"), str(folder / "mask.png")]


def build_page(smoother, segmenter=None, class_names=None, device: str = "cpu"):
    """The Gradio Blocks of the page (launch it with .launch(server_name=..., server_port=...))."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    methods = [m for m, v in METHODS.items() if segmenter is not None or v not in ("click_object", "classes")]
    downloads_root = Path(tempfile.mkdtemp(prefix="csgis_app_"))
    atexit.register(shutil.rmtree, downloads_root, True)  # the results served for download go with the page

    def new_editor():
        return Editor(smoother, segmenter, list(class_names or []), device)

    def opened(path, editor):
        from csgis.io import ImageReadError, read_image
        editor = editor or new_editor()
        try:
            editor.load(read_image(path))  # odd formats, EXIF orientation, size limit: as show.py reads
        except (ImageReadError, ValueError, TypeError) as e:
            return editor, None, None, f"**cannot open this file: {str(e).split(': ', 1)[-1] if path else e}**"
        h, w = editor.image.shape[:2]
        rgba = np.dstack([editor.image, np.full((h, w), 255, np.uint8)])
        return (editor, editor.overlay(), {"background": rgba, "layers": [], "composite": rgba},
                f"{w} x {h} px: click on the image (or brush on the Brush tab) to mark what to smooth.")

    def clicked(editor, mode, radius, method, classes, evt: gr.SelectData):
        if editor is None or editor.image is None:
            return editor, None, "**open an image first**"
        x, y = evt.index[:2]
        editor.click(x, y, mode == "include", radius)
        return show_region(editor, method, classes)

    def show_region(editor, method, classes):
        if editor is None or editor.image is None:
            return editor, None, "**open an image first**"
        try:
            region = editor.region(METHODS[method], classes)
        except ValueError as e:
            return editor, editor.overlay(), f"**{e}**"
        return editor, editor.overlay(region), f"region: {region.mean():.1%} of the image"

    def painted(editor, value, method, classes):
        if editor is None or editor.image is None:
            return editor, None, "**open an image first**"
        editor.paint((value or {}).get("layers") or [])
        return show_region(editor, method, classes)

    def cleared(editor):
        if editor is not None and editor.image is not None:
            editor.clicks, editor.painted = [], None
            return editor, editor.overlay(), "clicks and strokes cleared"
        return editor, None, ""

    def smoothed(editor, method, classes, strength, scale, feather_px, keep_mean, flatten, progress=gr.Progress()):
        if editor is None or editor.image is None:
            return None, None, None, "**open an image first**"
        try:
            region = editor.region(METHODS[method], classes)
        except ValueError as e:
            return None, None, None, f"**{e}**"
        progress(0, desc="smoothing (once per image, strength and scale)")
        post = RECOMMENDED_POST if flatten else None
        result = editor.result(region, feather_px, strength, scale,
                               lambda done, total: progress(done / total, desc=f"tile {done} of {total}"), keep_mean,
                               post)
        folder = downloads_root / (f"{editor.key()}_{len(editor.clicks)}_{strength:g}_{scale:g}_{feather_px:g}"
                                   + "_mean" * bool(keep_mean) + "_post" * bool(post))
        files = save_downloads(result, region, folder)
        return (editor.image, result), editor.overlay(region), files, (
            f"smoothed {region.mean():.1%} of the image (strength {strength:g}, scale {scale:g}, feather "
            f"{feather_px:g} px{f', then {post}' if post else ''}{', mean colour kept' if keep_mean else ''}); the "
            f"same as `show.py --mask mask.png --feather {feather_px:g} --strength {strength:g} --scale {scale:g}"
            f"{f' --post {post}' if post else ''}{' --keep-mean' if keep_mean else ''}`")

    with gr.Blocks(title="CSGIS-Net: smooth regions") as page:
        gr.Markdown("## CSGIS-Net: smooth the regions you mark\nOpen an image, click to mark what to smooth "
                    "(include) or to keep (exclude), choose how, then **Smooth**.")
        editor = gr.State(None)
        with gr.Row():
            with gr.Column():
                # A file box, not an image widget: every file reaches csgis.io.read_image, which opens what
                # show.py opens and says in one line why it cannot open the rest.
                upload = gr.File(label="Open or drop an image", type="filepath", file_count="single",
                                 elem_id="upload", height=120)
                with gr.Tab("Click"):
                    canvas = gr.Image(label="Click to mark (the region is tinted blue)", interactive=False,
                                      elem_id="canvas", format="png")
                    with gr.Row():
                        mode = gr.Radio(["include", "exclude"], value="include", label="a click marks",
                                        elem_id="mode")
                        radius = gr.Slider(1, 40, value=6, step=1, label="dab radius (px)", elem_id="radius")
                with gr.Tab("Brush"):
                    brush = gr.ImageEditor(label="Paint: green = include, red = exclude", type="numpy",
                                           image_mode="RGBA", sources=(), transforms=(), layers=False,
                                           brush=gr.Brush(colors=["#28dc3c", "#e62828"], color_mode="fixed",
                                                          default_size=12),
                                           elem_id="brush", format="png")
                    use_strokes = gr.Button("Use these strokes", elem_id="use_strokes")
                method = gr.Radio(methods, value=methods[0], label="region from", elem_id="method")
                classes = gr.CheckboxGroup(list(class_names or []), label="classes (segmenter)",
                                           visible=segmenter is not None, elem_id="classes")
                with gr.Row():
                    strength = gr.Slider(0, regions.MAX_STRENGTH, value=1, step=0.05, label="strength",
                                         elem_id="strength")
                    scale = gr.Slider(0.25, 2, value=1, step=0.25, label="scale", elem_id="scale")
                    feather_px = gr.Slider(0, 32, value=4, step=1, label="feather (px)", elem_id="feather")
                with gr.Row():
                    flatten = gr.Checkbox(False, label=f"flatten with L0 after the network (show.py --post "
                                                       f"{RECOMMENDED_POST})", elem_id="post")
                    keep_mean = gr.Checkbox(False, label="keep the input's mean colour (show.py --keep-mean)",
                                            elem_id="keep_mean")
                with gr.Row():
                    clear = gr.Button("Clear clicks and strokes", elem_id="clear")
                    run = gr.Button("Smooth", variant="primary", elem_id="smooth")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                compare = gr.ImageSlider(label="before | after (drag the handle)", elem_id="compare", format="png",
                                         slider_position=20)
                files = gr.File(label="download", file_count="multiple", elem_id="downloads")
        upload.upload(opened, [upload, editor], [editor, canvas, brush, status])
        use_strokes.click(painted, [editor, brush, method, classes], [editor, canvas, status])
        canvas.select(clicked, [editor, mode, radius, method, classes], [editor, canvas, status])
        method.change(show_region, [editor, method, classes], [editor, canvas, status])
        classes.change(show_region, [editor, method, classes], [editor, canvas, status])
        clear.click(cleared, [editor], [editor, canvas, status])
        run.click(smoothed, [editor, method, classes, strength, scale, feather_px, keep_mean, flatten],
                  [compare, canvas, files, status])
    return page
