"""vsr-train: train or fine-tune a zoo network with its original's recipe.

The command and its flags; the work is :mod:`runtime.cli.commands.train`, imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from training.recipe import DEGRADATIONS, recipe_names

from .common import CONTEXT, device_option, user_errors


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
def main(**flags: Any) -> None:
    """Train MODEL (a registered network) on --data with its original's recipe.

    \b
    Recipes: {recipes}

    Writes to --out: recipe.yaml (the settings used), log.jsonl (loss, learning rate, speed,
    validation PSNR/SSIM; also TensorBoard under tb/ when it is installed), weights/ in the
    original's layout (load them with vsr-export MODEL --checkpoint OUT/weights/latest.pth) and
    state/ (what --resume continues from). For many GPUs or machines, start the same command with
    torchrun --nproc_per_node N; the batch is per process.
    """
    from .commands import train as command  # the work and its libraries load here, not for --help

    command.execute(**flags)


main.help = (main.help or "").replace("{recipes}", ", ".join(recipe_names()))
if __name__ == "__main__":
    main()
