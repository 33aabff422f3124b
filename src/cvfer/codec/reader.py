"""Read a video as MIC sees it (Sec. 3.1): the I frame, and per P frame a motion field and a residual.

`read_compressed` returns a clip (or P frames sampled from it), `iter_compressed` yields P frame after
P frame; both stream the file (packet by packet, frame by frame), so memory is what they return plus a
few frames. Every problem with the file becomes a `CompressedVideoError` naming the file, the problem and the fix.
The representation, the sampling rule and the rounding/clamping choices are explained in docs/codec.md.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.sidedata.sidedata import SideDataContainer
from av.sidedata.sidedata import Type as SideDataType
from av.video.reformatter import VideoReformatter

from cvfer.codec import kernels
from cvfer.errors import CompressedVideoError, ConfigError
from cvfer.io import broken_link

# Codecs whose motion vectors FFmpeg exports and whose P frames predict from the previous frame.
SUPPORTED_CODECS = {"mpeg4": "MPEG-4 Part 2", "h264": "H.264"}
RESIDUAL_MODES = ("rgb", "codec")
REENCODE_FIX = "re-encode it with `cvfer reencode SRC DST`"
_PICTURE_LETTERS = {1: "I", 2: "P", 3: "B", 4: "S", 5: "i", 6: "p", 7: "b"}
# FFmpeg's AVMotionVector as PyAV's `MotionVectors.to_ndarray` lays it out (a frame without vectors has none).
_NO_BLOCK_VECTORS = np.zeros(
    0,
    dtype=np.dtype(
        [("source", "<i4"), ("w", "u1"), ("h", "u1"), ("src_x", "<i2"), ("src_y", "<i2"), ("dst_x", "<i2"),
         ("dst_y", "<i2"), ("flags", "<u8"), ("motion_x", "<i4"), ("motion_y", "<i4"), ("motion_scale", "<u2")],
        align=True,
    ),
)
# read_compressed refuses to return more than this (motion vectors + residuals): stream with iter_compressed.
MAX_RESULT_BYTES = 4 * 2**30
VECTOR_BYTES_PER_PIXEL, RESIDUAL_BYTES_PER_PIXEL = 2 * 2, 3 * 2  # int16 (x, y) vector, int16 RGB residual
RESULT_BYTES_PER_PIXEL = VECTOR_BYTES_PER_PIXEL + RESIDUAL_BYTES_PER_PIXEL
# Linear part of BT.601 limited-range YCbCr -> RGB (what swscale applies to untagged yuv420p) in 8-bit
# fixed point: R = 1.164 Y + 1.596 Cr, G = 1.164 Y − 0.392 Cb − 0.813 Cr, B = 1.164 Y + 2.017 Cb.
_Y_GAIN, _CR_TO_R, _CB_TO_G, _CR_TO_G, _CB_TO_B = 298, 409, -100, -208, 516


@dataclass(frozen=True, eq=False)
class CompressedVideo:
    """MIC's compressed-domain view of one clip (docs/design.md, codec section).

    `motion_vectors` is T×2×H×W int16 (x, y) `dst − src` in pixels and `residuals` T×H×W×3 int16,
    one per returned P frame; `frame_indices` gives each one's position in the stream.
    """

    path: Path
    iframe: np.ndarray
    motion_vectors: np.ndarray
    residuals: np.ndarray
    frame_types: str
    frame_indices: np.ndarray
    fps: float
    size: tuple[int, int]


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learns about a video without judging whether MIC can use it."""

    path: Path
    codec: str
    size: tuple[int, int]
    fps: float
    frame_types: str


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CompressedVideoError(broken_link(path) or "file not found", path, "check the path")
    if not path.is_file():
        raise CompressedVideoError("is not a file", path, "pass a video file (use `cvfer reencode` for a folder of images)")
    if path.stat().st_size == 0:
        raise CompressedVideoError("file is empty", path, "re-create or re-download it")


def _reason(error: Exception) -> str:
    """FFmpeg's own words for `error` (PyAV's `strerror`), else the exception's text."""
    return getattr(error, "strerror", None) or str(error)


def _corrupt(path: Path, where: str, error: Exception) -> CompressedVideoError:
    return CompressedVideoError(
        f"corrupted or truncated stream ({where}: {_reason(error)})", path, f"re-download the file or {REENCODE_FIX}"
    )


@contextlib.contextmanager
def _open_video(path: Path) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """Open `path` and yield its first video stream; any failure is a `CompressedVideoError`."""
    _check_file(path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise CompressedVideoError(
            f"not a readable video: truncated, corrupted or not a video ({_reason(error)})",
            path,
            f"check it is a complete video file or {REENCODE_FIX}",
        ) from error
    try:
        if not container.streams.video:
            kind = "audio only" if container.streams.audio else "no video stream"
            raise CompressedVideoError(f"has no video stream ({kind})", path, "pass a video file")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise CompressedVideoError("video stream has an unknown or unsupported codec", path, REENCODE_FIX)
        yield container, stream
    finally:
        container.close()


def _packets(path: Path, container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[av.Packet]:
    """The non-empty packets of `stream`, one at a time (never all in memory); after the last one, checks
    that the file had some and none is missing: fewer than the header promises means a truncated file."""
    count, latest_end, all_timed = 0, None, True
    try:
        for packet in container.demux(stream):
            if not packet.size:
                continue
            count += 1
            all_timed = all_timed and packet.pts is not None and bool(packet.duration)
            if packet.pts is not None:
                end = packet.pts + (packet.duration or 0)
                latest_end = end if latest_end is None else max(latest_end, end)
            yield packet
    except (av.error.FFmpegError, ValueError) as error:
        raise _corrupt(path, "while reading packets", error) from error
    if not count:
        raise CompressedVideoError("contains no video frames", path, f"check the file or {REENCODE_FIX}")
    if stream.frames and count < stream.frames:
        raise _corrupt(path, "end of file", ValueError(f"{count} of {stream.frames} frames present"))
    expected_seconds = _header_duration(container, stream)
    if not stream.frames and expected_seconds and latest_end is not None and stream.time_base:
        rate = _fps(stream) or 25.0
        present_seconds = float((latest_end - (stream.start_time or 0)) * stream.time_base)
        # Packets that all state their duration must reach the header's length to within half a frame (a
        # Matroska file cut by one cluster loses its last frame, the apex of most FER clips); others 1.5 frames.
        if present_seconds < expected_seconds - (0.5 if all_timed else 1.5) / rate:
            raise _corrupt(path, "end of file", ValueError(f"{present_seconds:.2f} s of {expected_seconds:.2f} s present"))


def _demux(path: Path, container: av.container.InputContainer, stream: av.VideoStream) -> list[av.Packet]:
    """All non-empty packets of `stream` in a list, checked as `_packets` does."""
    return list(_packets(path, container, stream))


def _count_packets(path: Path) -> tuple[int, tuple[int, int]]:
    """(packets, (height, width)) of the video at `path`: demuxed, not decoded, and checked as `_packets` does."""
    with _open_video(path) as (container, stream):
        return sum(1 for _ in _packets(path, container, stream)), (stream.codec_context.height, stream.codec_context.width)


def _header_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """The video's length in seconds as the container header states it (None if it does not)."""
    tag = stream.metadata.get("DURATION")  # Matroska/WebM per-track tag, HH:MM:SS.fraction
    if tag:
        with contextlib.suppress(ValueError):
            hours, minutes, seconds = tag.split(":")
            return 3600 * int(hours) + 60 * int(minutes) + float(seconds)
    if len(container.streams) == 1 and container.duration:
        return container.duration / av.time_base
    return None


def _decode(path: Path, context: av.codec.context.CodecContext, packets: Iterable[av.Packet]) -> Iterator[av.VideoFrame]:
    """Decode `packets` in order (then flush), turning decoder failures into `CompressedVideoError`."""
    fed = count = 0
    try:
        for packet in itertools.chain(packets, [None]):
            fed += packet is not None
            for frame in context.decode(packet):
                if frame.is_corrupt:
                    raise _corrupt(path, f"frame {count}", ValueError("decoder flagged the frame corrupt"))
                count += 1
                yield frame
    except (av.error.FFmpegError, ValueError) as error:
        raise _corrupt(path, f"decoding frame {count}", error) from error
    if count != fed:
        raise _corrupt(path, "after decoding", ValueError(f"{fed} packets gave {count} frames"))


def _picture_letter(frame: av.VideoFrame) -> str:
    return _PICTURE_LETTERS.get(int(frame.pict_type), "?")


def _fps(stream: av.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else 0.0


def sample_p_frames(num_p_frames: int, num_frames: int | None) -> np.ndarray:
    """Positions (0-based among the P frames) of `num_frames` P frames spread uniformly.

    `np.linspace(0, num_p_frames − 1, num_frames)` rounded half up: the first and the last P frame
    are always included; when fewer P frames exist than asked for, positions repeat (a P frame is
    returned several times, in order) so the result always has `num_frames` entries.
    """
    if num_frames is None:
        return np.arange(num_p_frames)
    return np.floor(np.linspace(0, num_p_frames - 1, num_frames) + 0.5).astype(np.int64)


def _check_mic_structure(path: Path, index: int, letter: str) -> None:
    """MIC needs exactly one I frame, first, followed by P frames only."""
    if index == 0 and letter != "I":
        raise CompressedVideoError(f"first frame is a {letter} frame, not an I frame", path, REENCODE_FIX)
    if index > 0 and letter in "Ii":
        raise CompressedVideoError(
            f"second I frame at frame {index} (a new GOP); MIC needs one GOP over the whole clip", path, REENCODE_FIX
        )
    if index > 0 and letter in "Bb":
        raise CompressedVideoError(f"contains B frames (frame {index}); MIC needs I and P frames only", path, REENCODE_FIX)
    if index > 0 and letter not in "Pp":
        raise CompressedVideoError(f"frame {index} is an {letter} frame, neither I nor P", path, REENCODE_FIX)


def _check_codec(path: Path, stream: av.VideoStream, residual: str) -> None:
    name = stream.codec_context.name
    if name == "hevc":
        raise CompressedVideoError("HEVC stream: FFmpeg exports no motion vectors for HEVC", path, REENCODE_FIX)
    if name not in SUPPORTED_CODECS:
        raise CompressedVideoError(f"{name} stream: motion vectors are read only from MPEG-4 Part 2 or H.264", path, REENCODE_FIX)
    if residual == "codec" and name != "mpeg4":
        raise CompressedVideoError(
            f"residual='codec' needs MPEG-4 Part 2 (FFmpeg's {name} decoder cannot skip motion compensation)",
            path,
            f"use residual='rgb' or {REENCODE_FIX}",
        )


def _check_half_pel(path: Path, index: int, block_vectors: np.ndarray) -> None:
    """residual='codec' needs half-pel MPEG-4: FFmpeg's `debug=nomc` replaces only the half-pel motion
    compensation, so quarter-pel blocks (exported with `motion_scale` 4) would still be predicted."""
    if block_vectors.size and int(block_vectors["motion_scale"].max()) > 2:
        raise CompressedVideoError(
            f"quarter-pel motion (frame {index}): residual='codec' would return the decoded picture, not the "
            "residual (FFmpeg cannot switch quarter-pel motion compensation off)",
            path,
            f"use residual='rgb', or re-encode without quarter-pel: {REENCODE_FIX}",
        )


def _yuv_planes(frame: av.VideoFrame, path: Path) -> list[np.ndarray]:
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        raise CompressedVideoError(f"pixel format {frame.format.name} is not 4:2:0", path, REENCODE_FIX)
    planes = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
        planes.append(rows[:, : plane.width])
    return planes


def codec_residual_to_rgb(planes: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """RGB residual (H×W×3 int16) from the Y, Cb, Cr planes a no-motion-compensation decode outputs.

    Those planes are 128 + the decoded residual (clipped to 0..255). The linear part of BT.601
    limited-range YCbCr -> RGB, in swscale's 8-bit fixed point (×256), maps (ΔY, ΔCb, ΔCr) to
    (ΔR, ΔG, ΔB): chroma terms are computed at chroma resolution and repeated 2×2 onto the luma term,
    and the sum is rounded (halves up).
    """
    blue, red = (np.subtract(plane, 128, dtype=np.int32) for plane in planes[1:])
    chroma_rows = blue.shape[0]
    luma_term = np.empty((2 * chroma_rows, width), dtype=np.int32)  # an odd last row is padded, then cut
    np.multiply(np.subtract(planes[0], 128, dtype=np.int32), _Y_GAIN, out=luma_term[:height])
    luma_term[height:] = luma_term[height - 1 : height]
    luma_term += 128
    pairs = luma_term.reshape(chroma_rows, 2, width)
    out = np.empty((height, width, 3), dtype=np.int16)
    for channel, term in enumerate((_CR_TO_R * red, _CB_TO_G * blue + _CR_TO_G * red, _CB_TO_B * blue)):
        doubled = np.stack((term, term), axis=-1).reshape(chroma_rows, -1)  # each column twice, cheaper than repeat
        summed = pairs + doubled[:, None, :width]
        out[..., channel] = summed.reshape(2 * chroma_rows, width)[:height] >> 8
    return out


def _nomc_context(stream: av.VideoStream) -> av.codec.context.CodecContext:
    """A second decoder of `stream` with FFmpeg's `debug=nomc` (motion compensation off): it outputs residuals."""
    context = av.codec.CodecContext.create(stream.codec_context.name, "r")
    context.extradata = stream.codec_context.extradata
    context.options = {"debug": "nomc"}
    return context


def _block_vectors(frame: av.VideoFrame) -> np.ndarray:
    """The frame's block vectors: FFmpeg's AVMotionVector records (none if it has none), copied.

    The side data is wrapped by hand: `frame.side_data` keeps its wrapper on the frame, a reference cycle
    that only Python's cyclic garbage collector frees, and the decoder's frame objects (PyAV allocates each
    before decoding into it) would reach the collector's older generations, where a clip's worth of decoded
    pictures would pile up. This wrapper holds the frame, not the other way round: both die by reference count.
    """
    side_data = SideDataContainer(frame).get(SideDataType.MOTION_VECTORS)
    if side_data is None:
        return _NO_BLOCK_VECTORS
    # Copied as bytes: NumPy copies a padded structured array field by field, ~50× slower.
    return np.frombuffer(bytearray(side_data), _NO_BLOCK_VECTORS.dtype)


@dataclass(frozen=True, eq=False)
class CompressedFrame:
    """One P frame as MIC sees it (what `iter_compressed` yields).

    `motion_vectors` is 2×H×W int16 (x, y) `dst − src` in pixels and `residual` H×W×3 int16, as one
    entry of `CompressedVideo`; `index` is the frame's position in the stream (the I frame is 0) and
    `iframe` the clip's I frame (one array, shared by every P frame of the clip).
    """

    index: int
    motion_vectors: np.ndarray
    residual: np.ndarray
    iframe: np.ndarray


class _StreamReader:
    """Decodes one MIC stream and computes the motion field and residual of the P frames asked for.

    Frame by frame: besides the outputs it keeps the I frame, the previous frame and a spare (RGB residuals), the
    trace (accumulated fields, 2×H×W int32 twice) and FFmpeg's own reference frames, whatever the clip's
    length. The pixel work is done by the compiled kernels of `cvfer.codec.kernels`.
    """

    def __init__(self, path: Path, stream: av.VideoStream, residual: str, accumulate: bool):
        self.path, self.residual, self.accumulate = path, residual, accumulate
        self.context = stream.codec_context
        self.context.flags2 |= av.codec.context.Flags2.export_mvs
        self.nomc = _nomc_context(stream) if residual == "codec" else None
        self.height, self.width = self.context.height, self.context.width
        self.letters: list[str] = []
        self.iframe: np.ndarray | None = None
        # One converter, reused frame after frame (a frame's own `to_ndarray` sets one up every time),
        # on one thread: swscale's own threads cost more CPU time than they save below 1080p.
        self.to_rgb = VideoReformatter()

    def _pixels(self, frame: av.VideoFrame) -> np.ndarray:
        """The frame's H×W×3 uint8 RGB pixels (a view of a converted frame's buffer)."""
        return self.to_rgb.reformat(frame, format="rgb24", threads=1).to_ndarray()

    def _decoded(self, packets: Iterable[av.Packet]) -> Iterator[tuple[av.VideoFrame, av.VideoFrame | None]]:
        """Each frame, paired (residual='codec') with the same frame decoded without motion compensation."""
        if self.nomc is None:
            for frame in _decode(self.path, self.context, packets):
                yield frame, None
            return
        # Both decoders run in step, so tee holds only the packets one is ahead of the other.
        compensated, uncompensated = itertools.tee(packets)
        yield from zip(
            _decode(self.path, self.context, compensated), _decode(self.path, self.nomc, uncompensated), strict=False
        )

    def p_frames(
        self, packets: Iterable[av.Packet], wanted: Callable[[int], bool], outputs: Callable[[int], tuple[np.ndarray, np.ndarray]]
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """For each P frame `wanted(index)` accepts: write its field and residual into `outputs(index)`
        (2×H×W and H×W×3 int16 arrays, C-contiguous) and yield (index, field, residual)."""
        height, width = self.height, self.width
        previous = sources = spare_sources = spare_pixels = None
        for index, (frame, uncompensated) in enumerate(self._decoded(packets)):
            letter = _picture_letter(frame)
            self.letters.append(letter)
            _check_mic_structure(self.path, index, letter)
            if (frame.height, frame.width) != (height, width):
                raise _corrupt(self.path, f"frame {index}", ValueError(f"size {frame.height}×{frame.width} != {height}×{width}"))
            returned = index > 0 and wanted(index)
            needs_pixels = index == 0 or (
                self.residual == "rgb" and (returned or (not self.accumulate and wanted(index + 1)))
            )
            current = None
            if needs_pixels:  # copied into the buffer of the frame before `previous` (never the I frame's)
                current = spare_pixels if spare_pixels is not None else np.empty((height, width, 3), dtype=np.uint8)
                np.copyto(current, self._pixels(frame))
            if index > 0 and (returned or sources is not None):
                block_vectors = _block_vectors(frame)
                if sources is not None:
                    kernels.trace(block_vectors, sources, spare_sources)
                    sources, spare_sources = spare_sources, sources
                if returned:
                    field, residual = outputs(index)
                    if sources is not None:
                        kernels.accumulated_outputs(sources, self.iframe, current, field, residual)
                    elif uncompensated is None:
                        kernels.motion_field_and_residual(block_vectors, current, previous, field, residual)
                    else:
                        _check_half_pel(self.path, index, block_vectors)
                        kernels.motion_field(block_vectors, field)
                        residual[...] = codec_residual_to_rgb(_yuv_planes(uncompensated, self.path), height, width)
                    yield index, field, residual
            if index == 0:
                self.iframe = current
                if self.accumulate:
                    sources = np.indices((height, width), dtype=np.int32)
                    spare_sources = np.empty_like(sources)
            spare_pixels = previous if previous is not self.iframe else None
            previous = current


def _validate_options(num_frames: int | None, residual: str, accumulate: bool) -> None:
    if residual not in RESIDUAL_MODES:
        raise ConfigError(f"unknown residual mode {residual!r}", fix=f"use one of {', '.join(RESIDUAL_MODES)}")
    whole = isinstance(num_frames, int | np.integer) and not isinstance(num_frames, bool)
    if num_frames is not None and (not whole or num_frames < 1):
        raise ConfigError(f"num_frames must be a positive integer or None, not {num_frames!r}")
    if accumulate and residual != "rgb":
        raise ConfigError("accumulate=True is defined for residual='rgb' only", fix="use residual='rgb'")


def _check_result_size(path: Path, count: int, size: tuple[int, int], num_frames: int | None) -> None:
    """Refuse a result over `MAX_RESULT_BYTES` (before anything is decoded or allocated)."""
    height, width = size
    per_frame = height * width * RESULT_BYTES_PER_PIXEL
    if count * per_frame <= MAX_RESULT_BYTES:
        return
    asked = f"num_frames={num_frames}" if num_frames is not None else f"all {count} P frames (num_frames=None)"
    raise ConfigError(
        f"{asked} would return {count * per_frame / 2**30:.1f} GiB of motion vectors and residuals for this "
        f"{height}×{width} clip, over read_compressed's limit of {MAX_RESULT_BYTES // 2**30} GiB "
        f"({MAX_RESULT_BYTES // per_frame} frames at this size)",
        path,
        f"ask for at most {MAX_RESULT_BYTES // per_frame} frames, or go through the clip with cvfer.codec.iter_compressed",
    )


class _RecycledResults:
    """Memory for large whole-clip results, reused once the caller has let go of an earlier result of the same
    size (docs/codec.md, "Recycled results").

    The allocator takes arrays of `RECYCLE_MIN_BYTES` or more straight from the OS, which zeroes every page
    before the reader writes it: at 640×480 that doubles the result's memory traffic. A block stays listed here
    while anything holds it (the arrays of a `CompressedVideo` are views of it, and so is all made from them);
    a block nothing else holds is handed to the next read of the same size, or dropped by a read of another.
    """

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.lock = threading.Lock()
        self.free_references = max(_references([np.empty(1, dtype=np.uint8)]))  # what a block held by no one shows

    def block(self, nbytes: int) -> np.ndarray:
        """A uint8 array of `nbytes`: a free block of that size, else a new one."""
        with self.lock:
            free = [count <= self.free_references for count in _references(self.blocks)]
            reused = next((block for block, is_free in zip(self.blocks, free) if is_free and block.nbytes == nbytes), None)
            self.blocks = [block for block, is_free in zip(self.blocks, free) if block is reused or not is_free]
            if reused is None:
                reused = np.empty(nbytes, dtype=np.uint8)
                self.blocks.append(reused)
            return reused


def _references(blocks: list[np.ndarray]) -> list[int]:
    """`sys.getrefcount` of each block, seen from here (so the same for a block held by no one whatever the
    interpreter counts besides)."""
    counts = []
    for block in blocks:
        counts.append(sys.getrefcount(block))
    return counts


RECYCLE_MIN_BYTES = 32 * 2**20  # glibc's largest mmap threshold: smaller arrays come back from its heap warm
_recycled_results = _RecycledResults()


def _result_arrays(count: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Uninitialised (motion vectors T×2×H×W, residuals T×H×W×3) int16 arrays for a result of `count` P frames."""
    pixels = count * height * width
    if pixels * RESULT_BYTES_PER_PIXEL < RECYCLE_MIN_BYTES:
        return (np.empty((count, 2, height, width), dtype=np.int16), np.empty((count, height, width, 3), dtype=np.int16))
    block = _recycled_results.block(pixels * RESULT_BYTES_PER_PIXEL)
    vector_bytes = pixels * VECTOR_BYTES_PER_PIXEL
    motion_vectors = block[:vector_bytes].view(np.int16).reshape(count, 2, height, width)
    residuals = block[vector_bytes:].view(np.int16).reshape(count, height, width, 3)
    return motion_vectors, residuals


def read_compressed(
    path: str | Path, *, num_frames: int | None = None, residual: str = "rgb", accumulate: bool = False
) -> CompressedVideo:
    """Read `path` (one GOP: an I frame then P frames) into a `CompressedVideo`.

    residual="rgb": Δ_t = frame_t − warp(frame_{t−1}, T_t), so warp(frame_{t−1}, T_t) + Δ_t == frame_t.
    residual="codec": the residual MPEG-4's decoder itself adds (decoded again with motion compensation
    off), in RGB units; refused for quarter-pel streams. accumulate=True traces vectors and residuals back
    to the I frame (CoViAR): warp(iframe, T_t) + Δ_t == frame_t. `num_frames` samples P frames uniformly (`sample_p_frames`).

    Memory: the result (10 bytes a pixel per returned P frame, at most `MAX_RESULT_BYTES`, else
    `ConfigError`) plus a few frames of working memory, whatever the clip's length. The file is read once,
    one packet at a time, when its header states the frame count (MP4, AVI); otherwise (Matroska, raw
    streams) it is demuxed once more beforehand to count the frames. Use `iter_compressed` for whole long clips.
    A result of `RECYCLE_MIN_BYTES` or more reuses the memory of a dropped result of the same size (one such
    block stays allocated after the last result is dropped, until the next read).
    """
    path = Path(path)
    _validate_options(num_frames, residual, accumulate)
    with _open_video(path) as (container, stream):
        _check_codec(path, stream, residual)
        # The header's count, checked against the packets as they are read (fewer: truncated, see _packets;
        # more: counted and read again below).
        if stream.frames >= 2:
            clip = _read_clip(path, container, stream, stream.frames, num_frames, residual, accumulate)
            if clip is not None:
                return clip
    count, _ = _count_packets(path)
    with _open_video(path) as (container, stream):
        clip = _read_clip(path, container, stream, count, num_frames, residual, accumulate)
    if clip is None:
        raise _corrupt(path, "end of file", ValueError(f"more than the {count} frames counted: the file changed while read"))
    return clip


def _read_clip(
    path: Path,
    container: av.container.InputContainer,
    stream: av.VideoStream,
    count: int,
    num_frames: int | None,
    residual: str,
    accumulate: bool,
) -> CompressedVideo | None:
    """`read_compressed` of the open `stream` of `count` frames; None if it turns out to have more."""
    if count < 2:
        raise CompressedVideoError("has a single frame and no P frames", path, "use a clip of at least two frames")
    height, width = stream.codec_context.height, stream.codec_context.width
    wanted = sample_p_frames(count - 1, num_frames) + 1
    _check_result_size(path, len(wanted), (height, width), num_frames)
    # Output positions of each wanted stream index (an index repeats when P frames are few).
    positions: dict[int, list[int]] = {}
    for position, index in enumerate(wanted.tolist()):
        positions.setdefault(index, []).append(position)
    motion_vectors, residuals = _result_arrays(len(wanted), height, width)
    reader = _StreamReader(path, stream, residual, accumulate)
    frames = reader.p_frames(
        _packets(path, container, stream),
        positions.__contains__,
        lambda index: (motion_vectors[positions[index][0]], residuals[positions[index][0]]),
    )
    for _ in frames:
        pass
    if len(reader.letters) != count:
        return None
    for first, *others in positions.values():
        for other in others:  # one by one: `array[[]] = …` scales with the frame though it copies nothing
            motion_vectors[other] = motion_vectors[first]
            residuals[other] = residuals[first]
    return CompressedVideo(
        path=path,
        iframe=reader.iframe,
        motion_vectors=motion_vectors,
        residuals=residuals,
        frame_types="".join(reader.letters),
        frame_indices=wanted,
        fps=_fps(stream),
        size=(height, width),
    )


def iter_compressed(path: str | Path, *, residual: str = "rgb", accumulate: bool = False) -> Iterator[CompressedFrame]:
    """Every P frame of `path` in stream order as a `CompressedFrame`: `read_compressed` one frame at a time.

    Same residual modes and identities as `read_compressed`; each frame's arrays are its own (keep
    them or drop them). Memory stays at a few frames whatever the clip's length. Options are checked
    at the call; problems with the file are raised while iterating (a truncated file when its end is
    reached, after the frames before it).
    """
    path = Path(path)
    _validate_options(None, residual, accumulate)
    return _iter_compressed(path, residual, accumulate)


def _iter_compressed(path: Path, residual: str, accumulate: bool) -> Iterator[CompressedFrame]:
    with _open_video(path) as (container, stream):
        _check_codec(path, stream, residual)
        reader = _StreamReader(path, stream, residual, accumulate)
        size = (reader.height, reader.width)
        frames = reader.p_frames(
            _packets(path, container, stream),
            lambda _: True,
            lambda _: (np.empty((2, *size), dtype=np.int16), np.empty((*size, 3), dtype=np.int16)),
        )
        for index, field, residual_frame in frames:
            yield CompressedFrame(index=index, motion_vectors=field, residual=residual_frame, iframe=reader.iframe)
    if len(reader.letters) < 2:
        raise CompressedVideoError("has a single frame and no P frames", path, "use a clip of at least two frames")


def _rgb_frames(frames: Iterable[av.VideoFrame]) -> Iterator[np.ndarray]:
    """Each frame's H×W×3 uint8 RGB pixels (as `frame.to_ndarray(format="rgb24")`, bit for bit), converted by
    one converter on one thread for all frames (`to_ndarray` sets up a new converter, threads included, every frame)."""
    to_rgb = VideoReformatter()
    for frame in frames:
        yield to_rgb.reformat(frame, format="rgb24", threads=1).to_ndarray()


def read_frames(path: str | Path, *, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Decoded RGB frames (N×H×W×3 uint8) of any video PyAV decodes, all or those at `indices` (in that order)."""
    path = Path(path)
    count, (height, width) = _count_packets(path)
    wanted = np.arange(count) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    outside = wanted[(wanted < 0) | (wanted >= count)]
    if outside.size:
        raise CompressedVideoError(
            f"frame index {int(outside[0])} is out of range: the video has {count} frames", path,
            f"use indices 0..{count - 1}",
        )
    positions: dict[int, list[int]] = {}  # where each wanted frame goes (indices may repeat, in any order)
    for position, index in enumerate(wanted.tolist()):
        positions.setdefault(index, []).append(position)
    frames = np.empty((len(wanted), height, width, 3), dtype=np.uint8)
    to_rgb = VideoReformatter()
    with _open_video(path) as (container, stream):
        for index, frame in enumerate(_decode(path, stream.codec_context, _packets(path, container, stream))):
            if (frame.height, frame.width) != (height, width):
                raise _corrupt(path, f"frame {index}", ValueError(f"size {frame.height}×{frame.width} != {height}×{width}"))
            if index in positions:
                pixels = to_rgb.reformat(frame, format="rgb24", threads=1).to_ndarray()
                for position in positions[index]:
                    frames[position] = pixels
    return frames


def probe(path: str | Path) -> VideoInfo:
    """Codec, size, frame rate and the picture type of every frame (decodes, converts nothing)."""
    path = Path(path)
    with _open_video(path) as (container, stream):
        frames = _decode(path, stream.codec_context, _packets(path, container, stream))
        letters = "".join(_picture_letter(frame) for frame in frames)
        return VideoInfo(
            path=path,
            codec=stream.codec_context.name,
            size=(stream.codec_context.height, stream.codec_context.width),
            fps=_fps(stream),
            frame_types=letters,
        )
