"""vsr-train: train or fine-tune a zoo network with its original's recipe."""

from __future__ import annotations

from pathlib import Path

import click

from training.recipe import DEGRADATIONS, read_yaml, recipe_names, resolve
from training.trainer import Trainer
from vsr_models.registry import networks

from .common import CONTEXT, device_option, say, user_errors


@click.command(context_settings=CONTEXT)
@click.argument("model")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="Training clips: a video, a folder of videos, a folder of frame folders (REDS, Vimeo-90K "
    "layouts), or a folder with GT and LR trees side by side.",
)
@click.option("--val", type=click.Path(path_type=Path), default=None, help="Held-out clips to score (same formats).")
@click.option(
    "--config", "config", type=click.Path(path_type=Path), default=None, help="A YAML merged over the recipe."
)
@click.option(
    "--pretrained",
    multiple=True,
    help="Weights to start from: a checkpoint file (official layouts) or the zoo name of installed "
    "weights; repeat for networks released as several files.",
)
@click.option("--key", default=None, help="Entry of a BasicSR file to start from: params (default) or params_ema.")
@click.option("--iters", type=click.IntRange(min=1), default=None, help="Iterations (the schedule is stretched to it).")
@click.option("--crop", type=click.IntRange(min=1), default=None, help="Square GT crop, HR pixels.")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Clips per process and iteration.")
@click.option("--frames", type=click.IntRange(min=1), default=None, help="LR frames per clip.")
@click.option("--degradation", type=click.Choice(DEGRADATIONS), default=None, help="How LR frames are made.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Base learning rate.")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Data loader processes per process.")
@click.option("--seed", type=int, default=None, help="Seed of the weights' initialisation and of the data.")
@click.option("--val-every", type=click.IntRange(min=0), default=None, help="Validate every N iterations.")
@click.option("--save-every", type=click.IntRange(min=1), default=None, help="Save every N iterations.")
@click.option("--log-every", type=click.IntRange(min=1), default=None, help="Log loss and speed every N iterations.")
@click.option("--amp/--no-amp", default=None, help="Mixed precision on CUDA (default: as the recipe).")
# --device as the other tools', but a kind (auto, cpu, cuda) and not cuda:N: under torchrun each
# process takes its local rank's GPU.
@device_option.but(
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    help="Under torchrun each process takes the GPU of its local rank.",
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run folder [default: runs/MODEL].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last saved state.")
@click.option("--overwrite", is_flag=True, help="Start over in a --out that holds a run.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@user_errors
def main(
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
    """Train MODEL (a registered network) on --data with its original's recipe.

    \b
    Recipes: {recipes}

    Writes to --out: recipe.yaml (the settings used), log.jsonl (loss, learning rate, speed,
    validation PSNR/SSIM; also TensorBoard under tb/ when it is installed), weights/ in the
    original's layout (load them with vsr-export MODEL --checkpoint OUT/weights/latest.pth) and
    state/ (what --resume continues from). For many GPUs or machines, start the same command with
    torchrun --nproc_per_node N; the batch is per process.
    """
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


main.help = (main.help or "").replace("{recipes}", ", ".join(recipe_names()))
if __name__ == "__main__":
    main()
