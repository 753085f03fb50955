"""vsr-train: train or fine-tune a zoo network with its original's recipe."""

from __future__ import annotations

from pathlib import Path

import click

from training.recipe import read_yaml, resolve
from training.trainer import Trainer
from vsr_models.registry import networks

from ..common import say


def execute(
    model: str,
    data: Path,
    val: Path | None,
    config: Path | None,
    pretrained: tuple[str, ...],
    key: str | None,
    iters: int | None,
    crop: int | None,
    batch: int | None,
    frames: int | None,
    degradation: str | None,
    lr: float | None,
    workers: int | None,
    seed: int | None,
    val_every: int | None,
    save_every: int | None,
    log_every: int | None,
    amp: bool | None,
    device: str,
    out: Path | None,
    resume: bool,
    overwrite: bool,
    no_progress: bool,
) -> None:
    """The work of ``vsr-train`` (:func:`runtime.cli.train.main`), with its parsed flags."""
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    if model not in networks():
        raise click.UsageError(f"unknown network {model!r}; trainable: {', '.join(networks())}")
    flags = {
        "train.iters": iters,
        "data.crop": crop,
        "train.batch": batch,
        "data.frames": frames,
        "data.degradation": degradation,
        "train.lr": lr,
        "data.workers": workers,
        "train.seed": seed,
        "val.every": val_every,
        "log.save_every": save_every,
        "log.every": log_every,
        "train.amp": amp,
    }
    recipe = resolve(model, read_yaml(config) if config else None, flags)
    if pretrained and lr is None:
        say(
            f"note: fine-tuning at the recipe's rate {recipe.train.lr:g}, which is for training from scratch; "
            "a short fine-tune keeps the pretrained quality at a lower rate (e.g. --lr 1e-5)"
        )
    out = out or Path("runs") / model
    trainer = Trainer(
        recipe,
        data,
        out,
        val=val,
        pretrained=pretrained,
        key=key,
        resume=resume,
        overwrite=overwrite,
        device=device,
        progress=not no_progress,
    )
    if trainer.world.main:
        say(
            f"training {model} on {len(trainer.dataset.clips)} clip(s), {len(trainer.dataset)} start positions; "
            f"iterations {trainer.start + 1}..{trainer.recipe.train.iters} on {trainer.world.size} process(es) "
            f"({trainer.world.device}), batch {trainer.recipe.train.batch} each"
        )
    record = trainer.run()
    if trainer.world.main:
        scores = "".join(f", {k} {record[k]:.4f}" for k in ("val_psnr", "val_ssim") if k in record)
        click.echo(f"wrote {out / 'weights' / 'latest.pth'}: iteration {record.get('iter')}{scores}")
