"""Write the smoother weights of a training state as a checkpoint that show.py, evaluate.py and
load_smoother read like models/*.pth (the plain csgis format, with the run's config and counters).

    python scripts/export_weights.py --state RUN/training_states/latest.state --out weights/x.pth
    python scripts/export_weights.py --state RUN/training_states/latest.state --out x.pth --weights average

--weights trained (default): the weights the optimizer trained. With train.ema_decay a run's
models/*.pth hold the moving average; this is how to keep the trained weights instead (or to take
the weights of a run stopped between epochs). --weights average: that moving average. The file
records which ("weights": "trained" or "average"). An existing --out is kept unless --overwrite.
Exit status 0 when written, 2 on a bad state, a bad --out or an existing file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from csgis.checkpoint import STATE_WEIGHTS, CheckpointError, save_checkpoint, smoother_from_state
from csgis.io import check_target, protect_inputs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--state", required=True, help="a smoothing run's training state (training_states/*.state)")
    p.add_argument("--out", required=True, help="checkpoint file to write")
    p.add_argument("--weights", choices=list(STATE_WEIGHTS), default="trained",
                   help="trained: the optimizer's weights; average: their moving average (train.ema_decay)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and out.resolve() == Path(args.state).resolve():
        print(f"error: --out {out} is the training state itself; write the weights to another file", file=sys.stderr)
        return 2
    if out.exists() and not args.overwrite:
        print(f"error: {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        protect_inputs(args.state)  # the write rule (csgis.io): no device, folder or input replaced
        check_target(out)
        model, state = smoother_from_state(args.state, args.weights)
        save_checkpoint(out, model, config=state.get("config"), epoch=state.get("epoch"),
                        iteration=state.get("global_step"), extra={"weights": args.weights})
    except (CheckpointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: the {args.weights} weights of {args.state} (epoch {state.get('epoch')}, "
          f"step {state.get('global_step')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
