"""The training loop shared by every network of the zoo.

One iteration: freezing and learning rates for the iteration (computed from its number), a batch
from the loader's worker processes, the network's whole-clip forward (under autocast on CUDA when
the recipe asks for mixed precision), the Charbonnier loss against the ground truth, one
optimiser step (gradients averaged over processes by DistributedDataParallel), the EMA update.
Every ``log.every`` iterations the loss (averaged over processes), learning rate and speed go to
``OUT/log.jsonl`` and TensorBoard; every ``val.every`` the held-out clips are scored (EMA weights
when EMA is on, as BasicSR does); every ``log.save_every`` and at the end the weights and the
training state are written.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from vsr_models.base import VSRNetwork
from vsr_models.checkpoint import load_checkpoint
from vsr_models.registry import all_weights, network

from . import checkpoints as ckpt
from . import distributed as dist
from .data import BatchCollate, ClipDataset, IterationSampler, KeyedDataset, ValClip, discover, validation_clips
from .metrics import charbonnier, psnr, ssim
from .optim import EMA, apply_freezing, make_optimizer, set_learning_rates
from .recipe import Recipe, RecipeError, build, to_yaml

LOG = "log.jsonl"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class RunLog:
    """``OUT/log.jsonl`` (one JSON object per record) and, if installed, TensorBoard under ``OUT/tb``."""

    def __init__(self, out: Path, resume_at: int | None, enabled: bool) -> None:
        self.path = out / LOG
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        if resume_at is not None and self.path.is_file():  # drop what the stopped run logged past its state
            kept = [line for line in self.path.read_text().splitlines() if json.loads(line).get("iter", 0) <= resume_at]
            self.path.write_text("".join(line + "\n" for line in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print(
                "note: TensorBoard is not installed, so only OUT/log.jsonl is written; "
                "pip install tensorboard (or the vsr[train] extra) for TensorBoard logs",
                file=sys.stderr,
            )
        else:
            self.tb = SummaryWriter(str(out / "tb"), purge_step=resume_at + 1 if resume_at is not None else None)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            it = record["iter"]
            for key, value in record.items():
                if key != "iter" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, it)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _pretrained_path(value: str) -> Path:
    """A checkpoint file, or the zoo name of installed weights."""
    path = Path(value)
    if not path.exists() and value in all_weights():
        return all_weights()[value].path()
    return path


def _check_crop(net: VSRNetwork, recipe: Recipe, scale: int | None) -> None:
    d = recipe.data
    if scale is not None and d.crop % scale:
        raise RecipeError(f"the crop ({d.crop}) must be a multiple of {net.name}'s scale {scale}")
    lr = d.crop // scale if scale else d.lq_size
    c = net.constraints
    if (lr, lr) != c.padded(lr, lr):
        need = max(c.min_h, c.min_w)
        need = (need + c.multiple - 1) // c.multiple * c.multiple
        multiple = f", multiples of {c.multiple}" if c.multiple > 1 else ""
        raise RecipeError(
            f"a GT crop of {d.crop} gives LR crops of {lr}x{lr}, which {net.name} cannot take (at least "
            f"{c.min_h}x{c.min_w}{multiple}); pass --crop {need * (scale or 4)} or more"
        )


def _check_window(net: VSRNetwork, recipe: Recipe) -> None:
    """A sliding-window network (SAVSR) trains on windows of exactly its length, scored at the centre."""
    window = net.plan().window
    if window is None:
        return
    size = 2 * window + 1
    if recipe.data.frames != size:
        raise RecipeError(f"{net.name} reads windows of {size} frames; pass --frames {size} (got {recipe.data.frames})")
    if recipe.train.target != "center":
        raise RecipeError(f"{net.name} outputs the centre frame of its window; set train.target: center")
    if recipe.val.frames != size:
        raise RecipeError(f"{net.name} is validated on windows of {size} frames; set val.frames: {size}")


def _check_batch(net: VSRNetwork, recipe: Recipe) -> None:
    """BatchNorm in training mode (SAVSR's scale attention pools to 1x1) needs two samples or more."""
    if recipe.train.batch < 2 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        raise RecipeError(f"{net.name} has BatchNorm layers, which need 2 samples or more per batch; pass --batch 2")


class Trainer:
    """A training run of ``recipe`` on ``data``, writing to ``out``.

    ``pretrained``: checkpoint files (or zoo names of installed weights) loaded strictly before
    training (``key``: ``params`` or ``params_ema`` of a BasicSR file). ``resume``: continue the
    run in ``out`` from its training state. ``workers``: overrides ``data.workers``.
    """

    def __init__(
        self,
        recipe: Recipe,
        data: str | Path,
        out: str | Path,
        *,
        val: str | Path | None = None,
        pretrained: Sequence[str] = (),
        key: str | None = None,
        resume: bool = False,
        overwrite: bool = False,
        device: str = "auto",
        progress: bool = True,
    ) -> None:
        self.world = dist.setup(device)
        self.out = Path(out)
        self.progress = progress
        state = self._check_out(resume, overwrite)
        if state is not None:
            recipe = _recipe_of_state(state, recipe)
        self.recipe = recipe
        t = recipe.train

        torch.manual_seed(t.seed)
        self.entry = network(recipe.network)
        recipe.layout = _layout(recipe, ckpt.written_layout(self.entry.cls), resumed=state is not None)
        self.net = self.entry.build(**recipe.network_config)
        for value in pretrained:
            load_checkpoint(self.net, _pretrained_path(value), key=key)
        missing = sorted(set(getattr(self.net, "checkpoint_parts", ())) - set(getattr(self.net, "loaded_parts", ())))
        if missing and self.world.main:
            warnings.warn(
                f"{recipe.network}'s {', '.join(missing)} keep random weights; pass their released files with "
                "--pretrained (one flag per file)",
                stacklevel=2,
            )
        self.scale: int | None = None if recipe.data.scales else self.net.scale
        if recipe.data.scales and self.net.scale_range is None:
            raise RecipeError(f"data.scales is for arbitrary-scale networks; {recipe.network} has a fixed scale")
        _check_crop(self.net, recipe, self.scale)
        _check_window(self.net, recipe)
        _check_batch(self.net, recipe)

        clips = discover(data, self.scale, recipe.data.rate)
        self.dataset = ClipDataset(clips, recipe.data, self.scale, t.seed)
        self.val_clips: list[ValClip] = []
        if val is not None:
            v = recipe.val
            held_out = discover(val, self.scale, recipe.data.rate)
            self.val_clips = validation_clips(held_out, recipe.data, self.scale, v.frames, v.crop or None, v.start)

        self._init_out(fresh=state is None)
        self.net.to(self.world.device).train()
        self.ema = EMA(self.net, t.ema) if t.ema > 0 else None
        self.optimizer = make_optimizer(self.net, t)
        self.amp = t.amp and self.world.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.start = 0
        if state is not None:
            self._restore(state)
        else:  # training-time randomness (drop path) differs between processes
            torch.manual_seed(t.seed + 1 + self.world.rank)
        self.model: nn.Module = self.net
        if self.world.distributed:
            ids = [self.world.device.index] if self.world.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids, find_unused_parameters=True)

    # ------------------------------------------------------------------ set-up
    def _check_out(self, resume: bool, overwrite: bool) -> dict[str, Any] | None:
        """The state to resume, or None; refuses a used folder without --overwrite."""
        if resume:
            return ckpt.load_state(self.out)
        if self.out.exists() and any(self.out.iterdir()) and not overwrite:
            raise ckpt.StateError(
                f"{self.out} is not empty; pass --resume to continue its run or --overwrite to start over"
            )
        return None

    def _init_out(self, fresh: bool) -> None:
        """Clear a replaced run and write recipe.yaml (main process), once the data proved usable."""
        dist.barrier(self.world)
        if self.world.main and fresh:
            for name in ("weights", "state", "tb", LOG, "recipe.yaml"):
                target = self.out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "recipe.yaml").write_text(to_yaml(self.recipe))
        dist.barrier(self.world)

    def _restore(self, state: dict[str, Any]) -> None:
        saved = (state.get("world", 1), state["recipe"]["train"]["batch"])
        if saved != (self.world.size, self.recipe.train.batch):
            raise ckpt.StateError(
                f"the run was trained with {saved[0]} process(es) x batch {saved[1]}; resume it with the same "
                f"(now {self.world.size} x {self.recipe.train.batch}) so that it continues exactly"
            )
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"][self.world.rank]
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and self.world.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.world.device)
        self.start = int(state["iteration"])

    # ------------------------------------------------------------------ the loop
    def loader(self) -> DataLoader:
        t, d = self.recipe.train, self.recipe.data
        sampler = IterationSampler(
            len(self.dataset), t.batch, t.iters, self.start, self.world.rank, self.world.size, t.seed
        )
        workers = min(d.workers, usable_cores())
        if workers < d.workers and self.world.main:
            print(
                f"note: {workers} data loader worker(s) instead of data.workers {d.workers}: this process may use "
                f"{usable_cores()} core(s) (the data drawn is the same)",
                file=sys.stderr,
            )
        return DataLoader(
            KeyedDataset(self.dataset),
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=BatchCollate(self.dataset),
            pin_memory=self.world.device.type == "cuda",
            prefetch_factor=4 if workers else None,
        )

    def step(self, batch: dict[str, Any]) -> torch.Tensor:
        t, dev = self.recipe.train, self.world.device
        iteration = batch["iteration"]
        apply_freezing(self.net, iteration, t.freeze)
        set_learning_rates(self.optimizer, iteration, t)
        lr = batch["lr"].to(dev, non_blocking=True)
        gt = batch["gt"].to(dev, non_blocking=True)
        scale = (batch["scale"],) if "scale" in batch else ()  # arbitrary-scale networks take it as an argument
        with torch.autocast(dev.type, dtype=torch.float16, enabled=self.amp):
            out = self.model(lr, *scale)
        out, gt = _targets(out.float(), gt, t.target)
        loss = charbonnier(out, gt, t.charbonnier_eps)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.net)
        return loss.detach()

    def run(self) -> dict[str, Any]:
        """Train to ``train.iters``; returns the last logged record."""
        t, log_cfg = self.recipe.train, self.recipe.log
        log = RunLog(self.out, self.start if self.start else None, self.world.main)
        bar = tqdm(
            total=t.iters,
            initial=self.start,
            disable=not (self.world.main and self.progress),
            unit="it",
            desc=f"training {self.entry.name}",
            dynamic_ncols=True,
        )
        record: dict[str, Any] = {}
        if self.val_clips and self.start == 0:  # the starting point, e.g. the pretrained weights
            scores = self.validate()
            if scores:
                log.write({"iter": 0, **scores})
        window_start, window_iters = time.perf_counter(), 0
        try:
            for batch in self.loader():
                iteration = batch["iteration"]
                loss = dist.mean(self.world, self.step(batch))
                window_iters += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}", lr=f"{self.optimizer.param_groups[-1]['lr']:.3g}")
                last = iteration == t.iters
                if iteration % log_cfg.every == 0 or last:
                    elapsed = time.perf_counter() - window_start
                    record = {
                        "iter": iteration,
                        "loss": loss,
                        "lr": set_learning_rates(self.optimizer, iteration, t),
                        "iters_per_s": window_iters / elapsed,
                        "clips_per_s": window_iters * t.batch * self.world.size / elapsed,
                    }
                    log.write(record)
                    window_start, window_iters = time.perf_counter(), 0
                every = self.recipe.val.every
                if self.val_clips and ((every and iteration % every == 0) or last):
                    scores = self.validate()
                    if scores:
                        log.write({"iter": iteration, **scores})
                        record.update(scores)
                if iteration % log_cfg.save_every == 0 or last:
                    self.save(iteration)
        finally:
            bar.close()
            log.close()
        dist.teardown(self.world)
        return record

    # ------------------------------------------------------------------ validation and saving
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean PSNR / SSIM over the held-out clips (per frame, then per clip), on the main process."""
        if not self.world.main:
            dist.barrier(self.world)
            return {}
        model = self.ema.model if self.ema is not None else self.net
        model.eval()
        v = self.recipe.val
        scale = ((4.0, 4.0),) if self.scale is None else ()  # arbitrary-scale networks are validated at x4
        psnrs, ssims = [], []
        for clip in self.val_clips:
            out = model(clip.lr.unsqueeze(0).to(self.world.device), *scale)[0].float().cpu()
            out, gt = _targets(out.unsqueeze(0), clip.gt.unsqueeze(0), self.recipe.train.target)
            frames = list(zip(out[0], gt[0]))
            psnrs.append(sum(psnr(a, b, v.channels, v.crop_border) for a, b in frames) / len(frames))
            ssims.append(sum(ssim(a, b, v.channels, v.crop_border) for a, b in frames) / len(frames))
        self.net.train()
        dist.barrier(self.world)
        return {"val_psnr": sum(psnrs) / len(psnrs), "val_ssim": sum(ssims) / len(ssims)}

    def meta(self, iteration: int) -> dict[str, Any]:
        return {
            "network": self.recipe.network,
            "network_config": dict(self.net.init_args),
            "iter": iteration,
            "recipe": self.recipe.as_dict(),
        }

    def save(self, iteration: int) -> None:
        rng: dict[str, torch.Tensor] = {"cpu": torch.get_rng_state()}
        if self.world.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.world.device)
        rngs = dist.gather(self.world, rng)
        if self.world.main:
            ema = self.ema.state_dict() if self.ema is not None else None
            ckpt.write_weights(self.out, iteration, self.net, self.net.state_dict(), ema, self.meta(iteration))
            state = {
                "iteration": iteration,
                "model": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rngs,
                "world": self.world.size,
                "recipe": self.recipe.as_dict(),
            }
            if ema is not None:
                state["ema"] = ema
            ckpt.save_atomic(state, self.out / ckpt.STATE)
        dist.barrier(self.world)


def _targets(out: torch.Tensor, gt: torch.Tensor, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The output frames and the GT frames they are scored against: all, or the centre one."""
    if out.dim() == gt.dim() - 1:  # a sliding-window network returns its one (centre) frame
        out = out.unsqueeze(1)
    if target == "center":
        mid = gt.shape[1] // 2
        gt = gt[:, mid : mid + 1]
        if out.shape[1] != 1:
            out = out[:, mid : mid + 1]
    if out.shape != gt.shape:
        raise RuntimeError(f"network output {tuple(out.shape)} does not match the ground truth {tuple(gt.shape)}")
    return out, gt


def _layout(recipe: Recipe, declared: str, *, resumed: bool) -> str:
    """The checkpoint layout the run writes: the one the network declares. A recipe that names
    another is refused; a resumed run saved with another (the recipes' own ``layout`` before the
    networks declared it) goes on in the declared one, with a warning."""
    if recipe.layout in (None, declared):
        return declared
    if resumed:
        warnings.warn(
            f"the run in this folder was saved writing the {recipe.layout!r} layout; its weights are now "
            f"written in {recipe.network}'s own {declared} layout",
            stacklevel=3,
        )
        return declared
    raise RecipeError(
        f"layout: {recipe.layout} in the recipe, but {recipe.network}'s weights are written in the layout of "
        f"its release ({declared}), which the network declares; drop the layout key"
    )


def _recipe_of_state(state: dict[str, Any], requested: Recipe) -> Recipe:
    """The recipe a resumed run continues with: the saved one (a changed network is an error)."""
    saved = build(Recipe, state["recipe"], "saved recipe")
    if saved.network != requested.network:
        raise ckpt.StateError(f"the run in this folder trains {saved.network}, not {requested.network}")
    return saved
