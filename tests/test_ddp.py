"""DDP glue of the engine: two gloo CPU processes == one process with the same global batch."""
import faulthandler
import os
import sys

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset

from csgis import distributed as ddp
from csgis.checkpoint import unwrap_model
from csgis.train import NonFiniteLossError, train_step
from csgis.train.loop import build_train_loader
from csgis.train.state import epoch_seed
from csgis.train.step import to_device

GLOBAL_BATCH = 4
STEPS = 3


class ToyPairs(Dataset):
    """12 fixed (input, gt) 8x8 pairs; gt is a smoothed input so there is something to learn."""

    def __init__(self, n: int = 12, nan_ids=()):
        g = torch.Generator().manual_seed(123)
        self.inputs = torch.rand(n, 3, 8, 8, generator=g)
        self.gts = nn.functional.avg_pool2d(self.inputs, 3, stride=1, padding=1)
        self.nan_ids = set(nan_ids)

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, i):
        gt = self.gts[i].clone()
        if i in self.nan_ids:
            gt[0, 0, 0] = float("nan")
        return {"input": self.inputs[i], "gt": gt, "id": i}


def conv_stack() -> nn.Module:
    """A small model without BatchNorm (torch's SyncBatchNorm has no CPU kernel)."""
    torch.manual_seed(7)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 3, padding=1))


def l1_criterion(out, batch):
    loss = (out - batch["gt"]).abs().mean()
    return loss, {"l1": loss.detach(), "total": loss.detach()}


def run_steps(info: ddp.DistInfo, nan_ids=()):
    """The engine's path: loader with the per-rank share, wrap_model, train_step; returns (params, ids, error)."""
    device = torch.device("cpu")
    model = conv_stack()
    wrapped = ddp.wrap_model(model, device, info)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    loader, sampler, generator = build_train_loader(ToyPairs(nan_ids=nan_ids), GLOBAL_BATCH, seed=3, info=info)
    sampler.set_epoch(0)
    generator.manual_seed(epoch_seed(3, 0))
    ids, error = [], None
    for step, batch in enumerate(loader):
        if step == STEPS:
            break
        ids.append(batch["id"].tolist())
        try:
            train_step(wrapped, to_device(batch, device), l1_criterion, optimizer, info=info, step=step + 1)
        except NonFiniteLossError as e:
            error = str(e)
            break
    return {k: v.detach().clone() for k, v in unwrap_model(wrapped).state_dict().items()}, ids, error


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    faulthandler.enable(all_threads=True)  # a native abort prints every thread's Python stack
    torch.set_num_threads(1)
    info = ddp.init_distributed(backend="gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        results = {}
        # One process group, two scenarios: spawning costs more than the steps.
        for scenario, nan_ids in (("clean", ()), ("nan", (0,))):
            params, ids, error = run_steps(info, nan_ids)
            results[scenario] = {"params": params, "ids": ids, "error": error}
        results.update(rank=info.rank, world=info.world_size)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        # Neither rank tears gloo down while the other may still be inside a collective.
        ddp.barrier(info)
    finally:
        ddp.cleanup()
    # Results are on disk: leave without interpreter teardown. Once in CI (torch 2.14.1) rank 0
    # died of SIGABRT, "terminate called without an active exception" (a native thread destroyed
    # while joinable), not reproduced in 80 local spawns; exit-time teardown is the usual place for
    # it. faulthandler prints every thread's stack if it happens anywhere else.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Results of both scenarios from 2 gloo processes (spawned once for the module)."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    finally:
        torch.set_num_threads(previous)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_two_gloo_processes_match_one_process(two_ranks, one_thread):
    assert [r["rank"] for r in two_ranks] == [0, 1] and two_ranks[0]["world"] == 2
    ranks = [r["clean"] for r in two_ranks]
    single, single_ids, error = run_steps(ddp.DistInfo())
    assert error is None and all(r["error"] is None for r in ranks)
    # Each rank gets half of the global batch; together they are exactly the single process's batch.
    for step in range(STEPS):
        assert len(ranks[0]["ids"][step]) == GLOBAL_BATCH // 2
        assert sorted(ranks[0]["ids"][step] + ranks[1]["ids"][step]) == sorted(single_ids[step])
        assert not set(ranks[0]["ids"][step]) & set(ranks[1]["ids"][step])
    # After STEPS steps of SGD with momentum the weights agree (gradients were averaged).
    initial = conv_stack().state_dict()
    for name, value in single.items():
        assert not torch.equal(value, initial[name])  # training moved them
        torch.testing.assert_close(ranks[0]["params"][name], value, rtol=0, atol=2e-6)
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name])


def test_non_finite_loss_on_one_rank_stops_every_rank(two_ranks):
    # Sample 0 carries a NaN: whichever rank draws it, both stop at that step (no hang, no update).
    ranks = [r["nan"] for r in two_ranks]
    errors = [r["error"] for r in ranks]
    assert all(e is not None and "non-finite loss at step" in e for e in errors)
    assert len(ranks[0]["ids"]) == len(ranks[1]["ids"])
    assert 0 in ranks[0]["ids"][-1] + ranks[1]["ids"][-1]
    for name in ranks[0]["params"]:
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name])


def test_global_batch_must_divide_world_size():
    assert ddp.per_rank_batch(8, 4) == 2
    with pytest.raises(ValueError, match="train.batch_size=6.*not divisible.*4"):
        ddp.per_rank_batch(6, 4)


def test_sampler_order_depends_on_seed_and_epoch_and_skips_prefix():
    data = list(range(10))
    a = ddp.ResumableSampler(data, num_replicas=1, rank=0, seed=5, batch_size=2)
    a.set_epoch(3)
    full = list(a)
    assert sorted(full) == data
    b = ddp.ResumableSampler(data, num_replicas=1, rank=0, seed=5, batch_size=2)
    b.set_epoch(3)
    b.start_batch = 2
    assert list(b) == full[4:] and len(b) == 6
    b.set_epoch(4)  # a new epoch forgets the skip and reshuffles
    assert len(list(b)) == 10 and list(b) != full
    # The two ranks of a world of 2 split the same permutation.
    r0 = ddp.ResumableSampler(data, num_replicas=2, rank=0, seed=5, batch_size=1)
    r1 = ddp.ResumableSampler(data, num_replicas=2, rank=1, seed=5, batch_size=1)
    for s in (r0, r1):
        s.set_epoch(3)
    assert list(r0) == full[0::2] and list(r1) == full[1::2]


def test_train_py_under_torchrun_two_gloo_processes_saves_once_and_resumes(demo_root, tmp_path, repo_root):
    """The whole training path under torchrun: 2 CPU processes share the global batch; rank 0 alone
    logs and writes the run folder; --resume continues under DDP."""
    import shutil
    import subprocess
    import sys

    import yaml
    from _helpers import tiny_config

    from csgis.checkpoint import load_smoother, load_training_state
    from csgis.config import to_dict
    from csgis.train import read_metrics

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(to_dict(tiny_config(demo_root, tmp_path, "ddp", data={"repeat": 1},
                                                         train={"epochs": 1, "freeze_bn": True}))))

    def torchrun_train(*extra):
        return subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(repo_root / "train.py"),
                               "--config", str(config), *extra], capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=tmp_path)

    first = torchrun_train()
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "ddp"
    log = (run / "train.log").read_text()
    assert "world 2 | global batch 4" in log
    assert log.count("epoch 1/1 done") == 1  # one writer
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1] and rows[0]["step"] == 4  # 16 samples / global batch 4
    state = load_training_state(run / "training_states" / "latest.state")
    assert (state["epoch"], state["global_step"]) == (1, 4)
    assert torch.equal(load_smoother(run / "models" / "latest.pth").state_dict()["stem.weight"],
                       state["model"]["stem.weight"])

    again = torchrun_train("--resume", "train.epochs=2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in (run / "train.log").read_text()
    assert [r["epoch"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2]
    resumed = load_training_state(run / "training_states" / "latest.state")
    assert (resumed["epoch"], resumed["global_step"]) == (2, 8)
    assert not torch.equal(resumed["model"]["stem.weight"], state["model"]["stem.weight"])
