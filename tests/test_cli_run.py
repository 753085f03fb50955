"""vsr-run from its command line with the options the README shows: tiles (edge tiles below the
network's minimum), windows (--chunk, --overlap), FP16 graphs, a real audio track copied end to end,
and a space-time network's 5x frame rate. The tiny BasicVSR package (random weights, exported once
through vsr-export) runs on real frames of the sample clips; the reference for each run is the
runtime called directly with the same options."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from torch import nn
from torch.nn import functional as F

from export.format import Package
from export.package import export_package
from runtime.backends import OrtBackend, OrtOptions
from runtime.cli.run import main as run_main
from runtime.pipeline import Upscaler, plan_tiles
from runtime.samples import downscale, psnr, sample_clip
from runtime.video import probe, read_frames
from vsr_models.base import Stage, VSRNetwork
from vsr_models.plan import At, Plan, Read, SizeConstraints, Step, TensorSpec

from .conftest import clip_frames
from .test_video import png_bytes


def _run(*args: object) -> Result:
    result = CliRunner().invoke(run_main, [*(str(a) for a in args), "--threads", "1"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def _real_lr(count: int, h: int, w: int, bits: int = 8) -> np.ndarray:
    """(T, 3, h, w) LR frames of bikes.mp4 (a 4h x 4w crop downscaled x4), quantised to ``bits`` so
    that a PNG holds them exactly."""
    hr = clip_frames("bikes.mp4", count)[:, :, 8 : 8 + 4 * h, 200 : 200 + 4 * w]
    peak = 2**bits - 1
    return (np.rint(downscale(hr, 4) * peak) / peak).astype(np.float32)


def _png_folder(folder: Path, lr: np.ndarray, bits: int = 8) -> Path:
    folder.mkdir()
    peak = 2**bits - 1
    for i, frame in enumerate(lr):
        levels = np.rint(frame.transpose(1, 2, 0) * peak).astype(np.uint8 if bits == 8 else np.uint16)
        (folder / f"{i:04d}.png").write_bytes(png_bytes(levels))
    return folder


def _levels(frames: np.ndarray, bits: int = 8) -> np.ndarray:
    return np.rint(np.clip(frames, 0, 1) * (2**bits - 1)).astype(np.int64)


def _read(out: Path, bits: int = 8) -> np.ndarray:
    """(T, 3, H, W) integer levels of a PNG folder or video."""
    return _levels(np.stack([f.rgb.transpose(2, 0, 1) for f in read_frames(out)]), bits)


def _reference(package: Package, lr: np.ndarray, precision: str = "fp32", **schedule) -> np.ndarray:
    backend = OrtBackend(package, OrtOptions(precision=precision, threads=1))
    up = Upscaler(backend, package.plan, package.scale, package.constraints, **schedule)
    return np.stack(list(up.stream(iter(lr))))


def _close(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to the rounding of values that fall on a level boundary."""
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1 and (got != want).mean() < 1e-3


# ---------------------------------------------------------------- tiles, windows, precision
def test_tiles_smaller_than_the_network_minimum_are_padded(tmp_path: Path, tiny_package: Package):
    """--tile 20 --tile-overlap 4 on 36x40 frames: 2x2 tiles of 22x24 LR pixels, below BasicVSR's 33x33."""
    assert max(t.y1 - t.y0 for t in plan_tiles(36, 40, 20, 4)) < tiny_package.constraints.min_h
    lr = _real_lr(3, 36, 40)
    src = _png_folder(tmp_path / "in", lr)
    _run(src, "-o", tmp_path / "out", "--model", tiny_package.root, "--tile", 20, "--tile-overlap", 4)
    got = _read(tmp_path / "out")
    _close(got, _levels(_reference(tiny_package, lr, chunk=None, tile=20, tile_overlap=4)))
    assert np.abs(got - _levels(_reference(tiny_package, lr, chunk=None))).max() > 1  # the tiles were used


def test_chunk_and_overlap(tmp_path: Path, tiny_package: Package):
    """16-bit frames: random weights carry little across frames, so windows change the result by less
    than one 8-bit level."""
    lr = _real_lr(8, 36, 40, bits=16)
    src = _png_folder(tmp_path / "in", lr, bits=16)
    _run(src, "-o", tmp_path / "out", "--model", tiny_package.root, "--chunk", 3, "--overlap", 1)
    got = _read(tmp_path / "out", bits=16)
    _close(got, _levels(_reference(tiny_package, lr, chunk=3, overlap=1), 16))
    assert np.abs(got - _levels(_reference(tiny_package, lr, chunk=None), 16)).max() > 1  # three windows, not one


def test_precision_fp16_runs_the_fp16_graphs(tmp_path: Path, tiny_package: Package):
    """16-bit PNG frames in and out, so that FP16 and FP32 results can be told apart."""
    lr = _real_lr(3, 36, 40, bits=16)
    src = _png_folder(tmp_path / "in", lr, bits=16)
    _run(src, "-o", tmp_path / "out", "--model", tiny_package.root, "--precision", "fp16", "--backend", "onnxruntime")
    got = _read(tmp_path / "out", bits=16)
    half, full = _reference(tiny_package, lr, "fp16", chunk=None), _reference(tiny_package, lr, chunk=None)
    _close(got, _levels(half, 16))
    assert np.abs(got - _levels(full, 16)).max() > 1  # not the fp32 graphs
    assert psnr(got / 65535, full) >= 50.0


# ---------------------------------------------------------------- audio
def _bunny_second(path: Path, h: int = 36, w: int = 64) -> tuple[Path, list[bytes]]:
    """The first second of bigbuckbunny.mp4: its video downscaled to w x h (x264, lossless), its 5.1
    AAC track copied packet for packet. Returns the file and the audio packets' bytes."""
    audio_packets = []
    bunny = str(sample_clip("bigbuckbunny.mp4"))
    with av.open(bunny) as src, av.open(bunny) as sound, av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25, options={"qp": "0"})
        video.width, video.height, video.pix_fmt = w, h, "yuv444p"
        audio = out.add_stream_from_template(sound.streams.audio[0])
        for i, frame in enumerate(src.decode(video=0)):
            if i == 25:
                break
            small = frame.reformat(width=w, height=h, format="yuv444p", interpolation="AREA")
            small.pts, small.time_base = i, Fraction(1, 25)
            out.mux(video.encode(small))
        out.mux(video.encode(None))
        for packet in sound.demux(sound.streams.audio[0]):
            if packet.dts is None or packet.pts * packet.time_base >= 1:
                continue
            audio_packets.append(bytes(packet))
            packet.stream = audio
            out.mux(packet)
    return path, audio_packets


def _audio_packets(path: Path) -> tuple[list[bytes], str, int]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        packets = [bytes(p) for p in container.demux(stream) if p.dts is not None]
        return packets, stream.codec_context.layout.name, stream.codec_context.sample_rate


def test_a_real_audio_track_is_copied_packet_for_packet(tmp_path: Path, tiny_package: Package):
    """Big Buck Bunny's own 5.1 AAC track (the clip's first second) reaches the output unchanged,
    beside the 25 upscaled frames."""
    source, packets = _bunny_second(tmp_path / "bunny.mp4")
    assert 40 <= len(packets) <= 50  # 1024 samples each at 48 kHz
    out = tmp_path / "bunny_x4.mp4"
    _run(source, "-o", out, "--model", tiny_package.root)
    info = probe(out)
    assert (info.width, info.height, info.num_frames, info.fps) == (256, 144, 25, 25)
    copied, layout, rate = _audio_packets(out)
    assert copied == packets and (layout, rate) == ("5.1", 48000)
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        samples = sum(f.samples for f in container.decode(stream))
    assert abs(samples / 48000 - 1.0) < 0.03  # one second of sound for one second of video


# ---------------------------------------------------------------- a space-time network
class _FiveFrames(nn.Module):
    """x -> five frames at 2x: the nearest-upscaled frame times 0.2, 0.4, ..., 1.0."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        return tuple(up * (k + 1) / 5 for k in range(5))


class FiveX(VSRNetwork):
    """A clip-level space-time network with DAVSR's output rate (5) and clips of two frames."""

    name, scale, clip_frames = "five-x", 2, 2
    constraints = SizeConstraints(min_h=8, min_w=8)

    def __init__(self) -> None:
        super().__init__()
        self.five = _FiveFrames()

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        n, t = lr.shape[:2]
        frames = self.five(lr.flatten(0, 1))
        return torch.stack(frames, 1).reshape(n, 5 * t, *frames[0].shape[1:])

    def stages(self) -> dict[str, Stage]:
        return {"five": Stage(self.five, ["x"], [f"o{k}" for k in range(5)])}

    def plan(self) -> Plan:
        return Plan(
            tensors={"lr": TensorSpec(3), "hr": TensorSpec(3, 2, rate=5)},
            steps=[
                Step(
                    "five",
                    {"x": Read("lr")},
                    {f"o{k}": "hr" for k in range(5)},
                    write_at={f"o{k}": At(5, k) for k in range(5)},
                )
            ],
            output="hr",
        )


@pytest.fixture(scope="module")
def five_x(tmp_path_factory: pytest.TempPathFactory) -> Package:
    return export_package(FiveX(), tmp_path_factory.mktemp("five-x") / "pkg")


def _video(path: Path, lr: np.ndarray, fps: int = 25) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"qp": "0"})
        stream.height, stream.width = lr.shape[-2:]
        stream.pix_fmt = "yuv444p"
        for frame in lr:
            rgb = np.ascontiguousarray(np.rint(frame.transpose(1, 2, 0) * 255).astype(np.uint8))
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def _timestamps(path: Path) -> list[Fraction]:
    with av.open(str(path)) as container:
        return sorted(f.pts * f.time_base for f in container.decode(video=0))


@pytest.mark.parametrize("count", [3, 1])
def test_space_time_network_writes_five_frames_per_input_frame(tmp_path: Path, five_x: Package, count: int):
    """3 frames at 25 fps (clips of 2 and 1) or a single frame: 5x the frames at 125 fps, evenly
    spaced, in time order (frame j is input j // 5 at brightness (j % 5 + 1) / 5)."""
    lr = _real_lr(count, 16, 24)
    source = _video(tmp_path / "in.mp4", lr)
    out = tmp_path / "out.mp4"
    result = _run(source, "-o", out, "--model", five_x.root, "--crf", 0)
    assert f"{5 * count} frames, 32x48" in result.output
    info = probe(out)
    assert (info.num_frames, info.fps) == (5 * count, 125)
    stamps = _timestamps(out)
    assert np.diff(np.array(stamps, dtype=float)).tolist() == pytest.approx([1 / 125] * (5 * count - 1))
    got = np.stack([f.rgb for f in read_frames(out)]).mean(axis=(1, 2, 3))
    want = [lr[j // 5].mean() * (j % 5 + 1) / 5 for j in range(5 * count)]
    np.testing.assert_allclose(got, want, atol=0.01)


@pytest.mark.slow
def test_davsr_writes_five_times_the_frame_rate(tmp_path: Path):
    """DAVSR (its quick configuration, random weights) through vsr-run: 3 frames of 64x64 in, 15 of
    256x256 at 125 fps out, equal (to the 8-bit level) to the network's whole-clip forward."""
    from vsr_models import create_model, networks

    torch.manual_seed(0)
    model = create_model("davsr", **networks()["davsr"].quick.config)
    package = export_package(model, tmp_path / "davsr")
    lr = _real_lr(3, 64, 64)
    _run(_png_folder(tmp_path / "in", lr), "-o", tmp_path / "out", "--model", package.root)
    got = _read(tmp_path / "out")
    with torch.inference_mode():
        want = model(torch.from_numpy(lr)[None])[0].numpy()
    assert got.shape == (15, 3, 256, 256)
    assert np.abs(got - _levels(want)).max() <= 1
    _run(_video(tmp_path / "in.mp4", lr), "-o", tmp_path / "out.mp4", "--model", package.root)
    assert probe(tmp_path / "out.mp4").fps == 125 and probe(tmp_path / "out.mp4").num_frames == 15
