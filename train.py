"""Train CSGIS-Net (or pre-train its segmenter): parse arguments, call csgis.train.train.

    python train.py --config configs/paper.yaml [key=value ...] [--resume] [--overwrite]
    torchrun --nproc_per_node=4 train.py --config configs/paper.yaml   # train.batch_size is global

Exit codes: 0 done; 2 bad config/arguments/run folder/missing segmenter; 1 a failed run
(data error, non-finite loss); 130/143 stopped by SIGINT/SIGTERM after saving a training state.
"""
from __future__ import annotations

import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML experiment file (configs/*.yaml)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from experiments/<name>/training_states/latest.state, which must exist "
                             "(resume=auto instead continues when there is a state and starts afresh otherwise)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh even if the run folder holds a run (it is moved to <name>_archived_<time>)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted config overrides, e.g. train.lr=5e-4 name=test")
    return parser.parse_intermixed_args(argv)  # key=value on both sides of a flag


def main(argv=None) -> int:
    args = parse_args(argv)
    from csgis.runtime import reuse_large_allocations
    reuse_large_allocations()  # large CPU speed-up, same results (see csgis/runtime.py)
    # Only the YAML reader before the config is checked: a bad key fails in a blink.
    from csgis.config import ConfigError, load_config

    def fail(message: str, code: int) -> int:
        print(f"error: {message}", file=sys.stderr)
        return code

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        return fail(str(e), 2)
    from csgis import distributed as ddp
    from csgis.checkpoint import CheckpointError
    from csgis.data import DatasetError
    from csgis.models.vgg import WeightsNotFoundError
    from csgis.train import (NonFiniteLossError, RunExistsError, SegmenterCheckpointError,
                             TrainingInterrupted, train)

    if args.resume:
        from csgis.train.run_folder import run_paths
        state = run_paths(cfg).state
        if not state.is_file():
            return fail(f"--resume: there is no training state {state} (is name={cfg.name} right? "
                        f"without --resume a new run starts)", 2)
    info = ddp.init_distributed()
    try:
        train(cfg, resume="auto" if args.resume else None, overwrite=args.overwrite, info=info)
    except (ConfigError, RunExistsError, SegmenterCheckpointError, WeightsNotFoundError, CheckpointError) as e:
        return fail(str(e), 2)  # fix the config, the run folder or the weight files named
    except DatasetError as e:
        return fail(str(e), 1)
    except ValueError as e:
        if "batch_size" in str(e):  # global batch not divisible by the number of processes
            return fail(str(e), 2)
        raise
    except NonFiniteLossError as e:
        return fail(str(e), 1)
    except TrainingInterrupted as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    except (FileNotFoundError, OSError) as e:  # a dataset or checkpoint file named in the message
        return fail(str(e), 1)
    finally:
        ddp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
