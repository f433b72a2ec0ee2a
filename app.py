"""The interactive page: mark regions on an image, smooth them with CSGIS-Net, download the result.

    python app.py --checkpoint weights/demo_smoother.pth [--segmenter weights/demo_segmenter.pth] [--port 7860]

It serves on 127.0.0.1 (--host to change), offline, on the CPU unless --device says otherwise.
Regions come from clicks (GrabCut or the random walker), from the segmenter (click an object, or
whole classes), or are the whole image; strength, scale and a feathered seam as in show.py. The
downloaded result equals `show.py --mask <downloaded mask> --feather F --strength S --scale C`.
"""
from __future__ import annotations

import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="smoother checkpoint (ours or the authors')")
    p.add_argument("--segmenter", default="", help="segmentation checkpoint: enables click-an-object and classes")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from csgis.checkpoint import CheckpointError, load_segmenter, load_smoother
    from csgis.device import resolve_device
    from csgis.regions import segmenter_classes
    from csgis.runtime import reuse_large_allocations
    reuse_large_allocations()
    try:
        device = str(resolve_device(args.device))
        smoother = load_smoother(args.checkpoint)
        segmenter = names = None
        if args.segmenter:
            segmenter = load_segmenter(args.segmenter)
            names = segmenter_classes(args.segmenter, segmenter.num_classes)
    except (CheckpointError, ValueError) as e:
        print(f"app.py: error: {e}", file=sys.stderr)
        return 2
    from csgis.webapp import build_page
    page = build_page(smoother, segmenter, names, device)
    import gradio as gr
    import signal

    def stop(signum, frame):  # `kill` closes the page as Ctrl-C does, so its download folder goes too
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    theme = gr.themes.Default(font=["ui-sans-serif", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    try:
        page.launch(server_name=args.host, server_port=args.port, theme=theme, show_error=True,
                    footer_links=[])
    except OSError as e:  # the port is taken
        print(f"app.py: error: cannot serve on {args.host}:{args.port} ({e})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
