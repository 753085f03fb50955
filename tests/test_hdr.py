"""10-bit HDR through the video runtime: a BT.2020 PQ clip made here with PyAV from real frames
(bigbuckbunny.mp4, turned into PQ code values the way an SDR grade is placed in HDR: BT.1886 decoding,
reference white at 203 cd/m², BT.709 -> BT.2020 primaries, the ST 2084 curve), encoded as 10-bit HEVC
with HDR10 mastering display and content light level SEI. Each test reads what was written back
with PyAV: colour tags, side data, bit depth and levels."""

from __future__ import annotations

import io
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from export.format import Package
from runtime.backends import OrtBackend, OrtOptions
from runtime.cli.run import main as run_main
from runtime.pipeline import Upscaler
from runtime.samples import downscale
from runtime.video import Colour, VideoWarning, VideoWriter, probe, read_frames
from runtime.video.colour import Decoder, colour_of
from runtime.video.pipes import pipe_writer
from runtime.video.types import MasteringDisplay

from .conftest import clip_frames

KR, KB = 0.2627, 0.0593  # BT.2020 non-constant luminance (ITU-R BT.2020, table 4)
BT2020, PQ, BT2020_NCL, TV = 9, 16, 9, 1  # FFmpeg's codes
MASTERING = MasteringDisplay(  # a P3-D65 display of 1000 cd/m², as HDR10 discs state it
    primaries=((Fraction(34000, 50000), Fraction(16000, 50000)), (Fraction(13250, 50000), Fraction(34500, 50000)),
               (Fraction(7500, 50000), Fraction(3000, 50000))),
    white=(Fraction(15635, 50000), Fraction(16450, 50000)),
    min_luminance=Fraction(50, 10000),
    max_luminance=Fraction(1000),
)  # fmt: skip
LIGHT = (1000, 400)
X265_HDR10 = "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50):max-cll=1000,400"


def _xyz(primaries: list[tuple[float, float]], white: tuple[float, float]) -> np.ndarray:
    """RGB -> CIE XYZ matrix of a colour space given by its (x, y) primaries and white point."""
    cols = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries]).T
    wx, wy = white
    scale = np.linalg.solve(cols, [wx / wy, 1.0, (1 - wx - wy) / wy])
    return cols * scale


D65 = (0.3127, 0.3290)
BT709_TO_BT2020 = np.linalg.solve(
    _xyz([(0.708, 0.292), (0.170, 0.797), (0.131, 0.046)], D65), _xyz([(0.64, 0.33), (0.30, 0.60), (0.15, 0.06)], D65)
)


def pq_encode(nits: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 inverse EOTF: absolute luminance in cd/m² -> code value in [0, 1]."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    y = np.clip(nits / 10000.0, 0.0, 1.0) ** m1
    return ((c1 + c2 * y) / (1 + c3 * y)) ** m2


def sdr_to_pq(rgb: np.ndarray) -> np.ndarray:
    """BT.709 SDR R'G'B' (..., 3) -> BT.2020 PQ R'G'B' with SDR white at 203 cd/m² (ITU-R BT.2408)."""
    linear = np.clip(rgb, 0, 1) ** 2.4 @ BT709_TO_BT2020.T
    return pq_encode(203.0 * np.clip(linear, 0, None))


def yuv420p10(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R'G'B' (H, W, 3) in [0, 1] -> limited-range BT.2020 NCL 10-bit planes Y (H, W), Cb and Cr
    (H/2, W/2), chroma averaged over each 2x2 block; the equations of BT.2020 section 4."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = KR * r + (1 - KR - KB) * g + KB * b
    cb, cr = (b - y) / (2 * (1 - KB)), (r - y) / (2 * (1 - KR))
    h, w = y.shape

    def half(c: np.ndarray) -> np.ndarray:
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    levels = [np.rint(64 + 876 * y), np.rint(512 + 896 * half(cb)), np.rint(512 + 896 * half(cr))]
    return tuple(np.clip(v, 0, 1023).astype(np.uint16) for v in levels)  # type: ignore[return-value]


def make_hdr_clip(path: Path, frames: np.ndarray, params: str = X265_HDR10) -> np.ndarray:
    """Write (T, H, W, 3) PQ R'G'B' as lossless 10-bit HEVC tagged BT.2020 / PQ / limited range, with
    ``params`` for x265 (the HDR10 SEI); returns the Y planes written, (T, H, W) uint16 levels."""
    lumas = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx265", rate=25, options={"x265-params": f"lossless=1:log-level=error:{params}"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p10le"
        ctx = stream.codec_context
        ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range = BT2020, PQ, BT2020_NCL, TV
        for i, rgb in enumerate(frames):
            y, cb, cr = yuv420p10(rgb)
            h, w = y.shape
            packed = np.concatenate([y, cb.reshape(h // 4, w), cr.reshape(h // 4, w)])
            frame = av.VideoFrame.from_ndarray(packed, format="yuv420p10le")
            frame.pts = i
            out.mux(stream.encode(frame))
            lumas.append(y)
        out.mux(stream.encode(None))
    return np.stack(lumas)


def luma_levels(rgb: np.ndarray) -> np.ndarray:
    """Limited-range 10-bit Y' of R'G'B' (..., 3), unrounded: the luma a BT.2020 YUV encoding of
    ``rgb`` stores (the matrix's chroma terms cancel in it, so chroma subsampling does not touch it)."""
    return 64 + 876 * (KR * rgb[..., 0] + (1 - KR - KB) * rgb[..., 1] + KB * rgb[..., 2])


def stored(path: Path) -> tuple[av.VideoFrame, list[np.ndarray]]:
    """The first decoded frame of ``path`` (with its tags and side data) and the Y planes of all frames."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    lumas = []
    for f in frames:
        plane = f.planes[0]
        rows = np.frombuffer(plane, np.dtype("<u2")).reshape(-1, plane.line_size // 2)
        lumas.append(rows[: plane.height, : plane.width].astype(np.int64))
    return frames[0], lumas


def assert_hdr10(frame: av.VideoFrame, pix_fmt: str = "yuv420p10le") -> None:
    """``frame`` is 10-bit BT.2020 PQ limited range with the clip's mastering display and light level
    (to the precision of the bitstream's fields: exact in HEVC and H.264's SEI, 16-bit and 14-bit
    fractions in AV1's metadata)."""
    assert frame.format.name == pix_fmt
    colour = colour_of(frame)
    assert (colour.primaries, colour.transfer, colour.matrix, colour.range) == (BT2020, PQ, BT2020_NCL, TV)
    m = colour.mastering
    assert m is not None and m.primaries is not None and m.white is not None
    got = [*np.ravel(m.primaries), *m.white, m.min_luminance, m.max_luminance]
    want = [*np.ravel(MASTERING.primaries), *MASTERING.white, MASTERING.min_luminance, MASTERING.max_luminance]
    np.testing.assert_allclose(np.array(got, float), np.array(want, float), rtol=2e-3, atol=2e-5)
    assert colour.light_level == LIGHT


@pytest.fixture(scope="module")
def pq_frames() -> np.ndarray:
    """(4, 64, 96, 3) BT.2020 PQ R'G'B' made from real frames (bigbuckbunny.mp4, colourful: a 256x384
    crop downscaled x4)."""
    hr = clip_frames("bigbuckbunny.mp4", 4)[:, :, 200:456, 400:784]
    return sdr_to_pq(downscale(hr, 4).transpose(0, 2, 3, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def hdr_clip(tmp_path_factory: pytest.TempPathFactory, pq_frames: np.ndarray) -> tuple[Path, np.ndarray]:
    """The PQ frames as lossless 10-bit HEVC with HDR10 SEI in MKV, and the Y levels stored in it."""
    path = tmp_path_factory.mktemp("hdr") / "pq.mkv"
    return path, make_hdr_clip(path, pq_frames)


# ---------------------------------------------------------------- reading


def test_probe_reads_the_colour_description_and_hdr10_side_data(hdr_clip):
    path, _ = hdr_clip
    info = probe(path)
    assert info.bit_depth == 10
    assert info.colour == Colour(BT2020, PQ, BT2020_NCL, TV, MASTERING, LIGHT) and info.colour.hdr


def test_10_bit_frames_decode_with_the_bt2020_matrix_and_no_8_bit_step(hdr_clip, pq_frames):
    """The luma of the decoded RGB is the stored 10-bit luma to float precision (an 8-bit step on the
    way would be off by up to two levels, and so would a decoding with another matrix, as the same
    frame decoded as BT.709 shows), and the colours are the PQ frames' up to the 4:2:0 chroma."""
    path, lumas = hdr_clip
    rgb = np.stack([f.rgb for f in read_frames(path)])
    inside = (rgb > 0).all(axis=-1) & (rgb < 1).all(axis=-1)  # chroma upsampling can overshoot; those clip
    assert inside.mean() > 0.99
    error = np.abs(luma_levels(rgb) - lumas)[inside]
    assert error.max() < 0.01
    colour_error = np.median(np.abs(rgb - pq_frames)) * 876
    assert colour_error < 1.0  # levels; what is left is the 4:2:0 chroma
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    frame.colorspace = 1  # as if it said BT.709
    as_709 = Decoder(path, still=False).to_rgb(frame)
    assert np.abs(luma_levels(as_709) - lumas[0]).mean() > 0.3


# ---------------------------------------------------------------- writing


@pytest.mark.parametrize(("codec", "suffix"), [("libx265", "mkv"), ("libx264", "mp4"), ("libsvtav1", "mkv")])
def test_the_writer_keeps_depth_tags_and_hdr10_and_10_bit_levels(tmp_path, hdr_clip, codec, suffix):
    """Each HDR10-capable encoder: 10-bit output, the input's tags and side data read back, and the
    stored luma within rounding of the RGB it was given (lossless for x264/x265)."""
    path, _ = hdr_clip
    info = probe(path)
    frames = [f.rgb for f in read_frames(path)]
    out = tmp_path / f"out.{suffix}"
    with VideoWriter(out, 96, 64, Fraction(25), codec=codec, crf=0, bit_depth=10, colour=info.colour) as writer:
        assert writer.pix_fmt == "yuv420p10le" and writer.colour == info.colour
        for rgb in frames:
            writer.write(rgb)
    first, lumas = stored(out)
    assert_hdr10(first)
    if codec != "libsvtav1":  # AV1's fields are coarser (see assert_hdr10); SVT-AV1 is lossy at any setting
        assert probe(out).colour == info.colour
        error = np.abs(luma_levels(np.stack(frames)) - np.stack(lumas))
        assert error.max() <= 0.52  # half a level, plus the 16-bit RGB the writer quantises first
        assert (np.stack(lumas) % 4 != 0).mean() > 0.5  # 10-bit levels, not 8-bit ones shifted


def test_x265_keeps_its_info_lines_off_stderr_and_its_hdr10_parameters(tmp_path, hdr_clip, capfd):
    """x265 prints a dozen "x265 [info]" lines (and warnings about small frames) per output unless told
    otherwise; the writer quiets them without dropping the HDR10 parameters it passes the same way."""
    path, _ = hdr_clip
    info = probe(path)
    out = tmp_path / "out.mkv"
    capfd.readouterr()
    with VideoWriter(out, 96, 64, Fraction(25), codec="libx265", crf=20, bit_depth=10, colour=info.colour) as writer:
        for frame in read_frames(path):
            writer.write(frame.rgb)
    assert "x265 [" not in capfd.readouterr().err
    assert_hdr10(stored(out)[0])


def test_full_range_is_kept_at_10_bits(tmp_path, pq_frames):
    """A full-range source gives a full-range output with the levels of full range."""
    colour = Colour(BT2020, PQ, BT2020_NCL, 2)
    out = tmp_path / "full.mkv"
    with VideoWriter(out, 96, 64, Fraction(25), codec="libx265", crf=0, bit_depth=10, colour=colour) as writer:
        writer.write(pq_frames[0])
    first, lumas = stored(out)
    assert colour_of(first) == colour
    want = 1023 * (KR * pq_frames[0][..., 0] + (1 - KR - KB) * pq_frames[0][..., 1] + KB * pq_frames[0][..., 2])
    assert np.abs(lumas[0] - want).max() <= 0.52
    back = next(read_frames(out)).rgb
    # what is left is the 4:2:0 chroma; read as limited range it would be off by tens of levels
    assert np.median(np.abs(back - pq_frames[0])) * 1023 < 2.0


def test_a_codec_without_hdr10_parameters_says_what_it_leaves_out(tmp_path, hdr_clip):
    path, _ = hdr_clip
    info = probe(path)
    out = tmp_path / "ffv1.mkv"
    with pytest.warns(VideoWarning, match="HDR10 mastering display and content light level metadata is not carried"):
        writer = VideoWriter(out, 96, 64, Fraction(25), codec="ffv1", bit_depth=10, colour=info.colour)
    with writer:
        writer.write(next(read_frames(path)).rgb)
    with av.open(str(out)) as container:
        frame = next(container.decode(video=0))
    assert frame.format.name == "gbrp10le"
    assert (frame.color_primaries, frame.color_trc) == (BT2020, PQ)  # the tags are kept
    assert not list(frame.side_data)


def test_a_codec_without_10_bit_says_so_and_writes_8_bits(tmp_path, hdr_clip):
    path, _ = hdr_clip
    info = probe(path)
    tags_only = replace(info.colour, mastering=None, light_level=None)  # the HDR10 warning is tested above
    with pytest.warns(VideoWarning, match="mpeg4 cannot encode yuv420p deeper than 8 bits"):
        writer = VideoWriter(tmp_path / "o.mkv", 96, 64, Fraction(25), codec="mpeg4", bit_depth=10, colour=tags_only)
    writer.abort()
    assert writer.pix_fmt == "yuv420p"


def test_png_frames_are_16_bit_with_a_cicp_chunk(tmp_path, hdr_clip):
    """PNG output: 16-bit samples (every 10-bit level kept), primaries and PQ in cICP; the mastering
    display cannot be written (a warning says so)."""
    path, _ = hdr_clip
    info = probe(path)
    frames = [f.rgb for f in read_frames(path)]
    out = tmp_path / "frames"
    with pytest.warns(VideoWarning, match="cannot attach side data"):
        writer = VideoWriter(out, 96, 64, None, bit_depth=info.bit_depth, colour=info.colour)
    with writer:
        writer.write(frames[0])
    png = (out / "00000000.png").read_bytes()
    assert png[24] == 16  # IHDR bit depth
    at = png.index(b"cICP")
    assert png[at + 4 : at + 8] == bytes([BT2020, PQ, 0, 1])  # primaries, transfer, RGB, full range
    back = next(read_frames(out)).rgb
    assert np.abs(back - frames[0]).max() < 0.5 / 65535 + 1e-6


@pytest.mark.parametrize("container_format", ["mpegts", "nut"])
def test_a_live_pipe_keeps_10_bits_tags_and_hdr10(container_format, hdr_clip):
    """vsr-run's stream output (MPEG-TS or NUT on standard output): H.264 High 10 with the tags in
    its VUI and the HDR10 SEI in band, so they survive a container that has no place for them."""
    path, _ = hdr_clip
    info = probe(path)
    sink = io.BytesIO()
    writer = pipe_writer(
        96, 64, Fraction(25), container_format=container_format, crf=0, bit_depth=10, colour=info.colour,
        live=True, stream=sink,
    )  # fmt: skip
    with writer:
        for frame in read_frames(path):
            writer.write(frame.rgb, pts=frame.pts)
    sink.seek(0)
    with av.open(sink, format=container_format) as container:
        first = next(container.decode(video=0))
    assert_hdr10(first)


def test_ffv1_in_a_nut_pipe_says_the_tags_are_left_out(hdr_clip):
    """NUT has no colour fields and FFV1's bitstream none for primaries and transfer: a warning, and
    the stream read back indeed lacks them (so the warning is not a false alarm)."""
    path, _ = hdr_clip
    sink = io.BytesIO()
    tags_only = replace(probe(path).colour, mastering=None, light_level=None)  # the HDR10 warning is tested above
    with pytest.warns(VideoWarning, match="NUT has no place for the colour tags of ffv1"):
        writer = pipe_writer(96, 64, Fraction(25), codec="ffv1", bit_depth=10, colour=tags_only, stream=sink)
    with writer:
        writer.write(next(read_frames(path)).rgb)
    sink.seek(0)
    with av.open(sink, format="nut") as container:
        frame = next(container.decode(video=0))
    assert frame.format.name == "gbrp10le" and (frame.color_primaries, frame.color_trc) == (2, 2)


def test_an_rgb_source_gives_limited_range_yuv(tmp_path, pq_frames):
    """RGB is full range by nature; that says nothing about YUV, so an FFV1 RGB source's YUV output is
    limited range (with the matrix by size), its primaries and transfer kept."""
    rgb_source = tmp_path / "rgb.mkv"
    with VideoWriter(rgb_source, 96, 64, Fraction(25), codec="ffv1", bit_depth=10, colour=Colour(BT2020, PQ)) as w:
        w.write(pq_frames[0])
    info = probe(rgb_source)
    assert (info.colour.matrix, info.colour.range) == (0, 2) and info.bit_depth == 10
    with VideoWriter(tmp_path / "yuv.mp4", 96, 64, Fraction(25), bit_depth=10, colour=info.colour) as writer:
        writer.write(pq_frames[0])
    assert probe(tmp_path / "yuv.mp4").colour == Colour(BT2020, PQ, 6, TV)


def test_sdr_output_is_tagged_as_before(tmp_path, pq_frames):
    """An untagged 8-bit source keeps the old behaviour: limited range, the matrix by size, no
    primaries or transfer tag, no side data."""
    out = tmp_path / "sdr.mp4"
    with VideoWriter(out, 96, 64, Fraction(25), colour=Colour()) as writer:
        writer.write(pq_frames[0])
    with av.open(str(out)) as container:
        first = next(container.decode(video=0))
    assert first.format.name == "yuv420p"
    assert colour_of(first) == Colour(2, 2, 6, TV)


# ---------------------------------------------------------------- vsr-run end to end


def test_vsr_run_keeps_hdr10_and_10_bit_precision(tmp_path, hdr_clip, tiny_package: Package):
    """The tiny BasicVSR over the PQ clip with vsr-run's default codec (libx264, here lossless), in two
    segments joined by stream copy: the output is 10-bit BT.2020 PQ with the HDR10 side data, and its
    luma is the network's float output to within rounding; through 8 bits it would be off by up to
    two levels."""
    path, _ = hdr_clip
    out = tmp_path / "x4.mp4"
    args = [path, "-o", out, "--model", tiny_package.root, "--crf", 0, "--chunk", 2, "--overlap", 1, "--segment", 2]
    result = CliRunner().invoke(run_main, [*map(str, args), "--threads", "1"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    first, lumas = stored(out)
    assert_hdr10(first)
    assert probe(out).bit_depth == 10 and len(lumas) == 4

    lr = np.stack([f.rgb.transpose(2, 0, 1) for f in read_frames(path)])
    backend = OrtBackend(tiny_package, OrtOptions(precision="fp32", threads=1))
    up = Upscaler(backend, tiny_package.plan, tiny_package.scale, tiny_package.constraints, chunk=2, overlap=1)
    want = np.clip(np.stack(list(up.stream(iter(lr)))).transpose(0, 2, 3, 1), 0, 1)
    got = np.stack(lumas)
    error = np.abs(luma_levels(want) - got)
    assert error.max() <= 0.55 and error.mean() < 0.3
    through_8_bits = luma_levels(np.rint(want * 255) / 255)
    assert np.abs(through_8_bits - got).max() > 1.5  # what this test would see if 8 bits were on the way
