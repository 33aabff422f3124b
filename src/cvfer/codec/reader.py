"""Read a video as MIC sees it (Sec. 3.1): the I frame, and per P frame a motion field and a residual.

Every problem with the file becomes a `CompressedVideoError` naming the file, the problem and the fix.
The representation, the sampling rule and the rounding/clamping choices are explained in docs/codec.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from cvfer.codec.motion import BlockFields, vectors_from_indices
from cvfer.errors import CompressedVideoError, ConfigError
from cvfer.io import broken_link

# Codecs whose motion vectors FFmpeg exports and whose P frames predict from the previous frame.
SUPPORTED_CODECS = {"mpeg4": "MPEG-4 Part 2", "h264": "H.264"}
RESIDUAL_MODES = ("rgb", "codec")
REENCODE_FIX = "re-encode it with `cvfer reencode SRC DST`"
_PICTURE_LETTERS = {1: "I", 2: "P", 3: "B", 4: "S", 5: "i", 6: "p", 7: "b"}
_NO_BLOCK_VECTORS = np.zeros(
    0,
    dtype=[("w", "u1"), ("h", "u1"), ("dst_x", "<i2"), ("dst_y", "<i2"),
           ("motion_x", "<i4"), ("motion_y", "<i4"), ("motion_scale", "<u2")],
)
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


def _demux(path: Path, container: av.container.InputContainer, stream: av.VideoStream) -> list[av.Packet]:
    """All non-empty packets of `stream`; fewer than the header promises means a truncated file."""
    try:
        packets = [packet for packet in container.demux(stream) if packet.size]
    except (av.error.FFmpegError, ValueError) as error:
        raise _corrupt(path, "while reading packets", error) from error
    if not packets:
        raise CompressedVideoError("contains no video frames", path, f"check the file or {REENCODE_FIX}")
    if stream.frames and len(packets) < stream.frames:
        raise _corrupt(path, "end of file", ValueError(f"{len(packets)} of {stream.frames} frames present"))
    expected_seconds = _header_duration(container, stream)
    ends = [packet.pts + (packet.duration or 0) for packet in packets if packet.pts is not None]
    if not stream.frames and expected_seconds and ends and stream.time_base:
        rate = _fps(stream) or 25.0
        present_seconds = float((max(ends) - (stream.start_time or 0)) * stream.time_base)
        if present_seconds < expected_seconds - 1.5 / rate:
            raise _corrupt(path, "end of file", ValueError(f"{present_seconds:.2f} s of {expected_seconds:.2f} s present"))
    return packets


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


def _decode(path: Path, context: av.codec.context.CodecContext, packets: Sequence[av.Packet]) -> Iterator[av.VideoFrame]:
    """Decode `packets` in order (then flush), turning decoder failures into `CompressedVideoError`."""
    count = 0
    try:
        for packet in [*packets, None]:
            for frame in context.decode(packet):
                if frame.is_corrupt:
                    raise _corrupt(path, f"frame {count}", ValueError("decoder flagged the frame corrupt"))
                count += 1
                yield frame
    except (av.error.FFmpegError, ValueError) as error:
        raise _corrupt(path, f"decoding frame {count}", error) from error
    if count != len(packets):
        raise _corrupt(path, "after decoding", ValueError(f"{len(packets)} packets gave {count} frames"))


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


def _write_codec_residuals(
    path: Path, stream: av.VideoStream, packets: Sequence[av.Packet], positions: dict[int, list[int]], residuals: np.ndarray
) -> None:
    """Decode again with FFmpeg's `debug=nomc` (motion compensation off); write each wanted frame's residual."""
    context = av.codec.CodecContext.create(stream.codec_context.name, "r")
    context.extradata = stream.codec_context.extradata
    context.options = {"debug": "nomc"}
    height, width = stream.codec_context.height, stream.codec_context.width
    for index, frame in enumerate(_decode(path, context, packets)):
        if index in positions:
            residuals[positions[index][0]] = codec_residual_to_rgb(_yuv_planes(frame, path), height, width)


def _block_vectors(frame: av.VideoFrame) -> np.ndarray:
    """The frame's MOTION_VECTORS side data as FFmpeg's structured array (empty if it has none)."""
    side_data = frame.side_data.get(av.sidedata.sidedata.Type.MOTION_VECTORS)
    return _NO_BLOCK_VECTORS if side_data is None else side_data.to_ndarray()


def _gather_pixels(image: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Pixels of a contiguous H×W×3 uint8 `image` at flat `indices` (H×W), moving 3 bytes per pixel at once."""
    pixels = image.reshape(-1, 3).view(np.dtype((np.void, 3))).ravel()
    return pixels.take(indices, mode="clip").view(np.uint8).reshape(*indices.shape, 3)


class _AccumulatedTrace:
    """CoViAR's accumulation: every P frame traced back to the I frame, fields built a batch at a time.

    The trace itself is sequential (frame t's sources depend on frame t−1's); `accumulated` holds, for
    every pixel, the flat index of the I-frame pixel it comes from.
    """

    def __init__(self, iframe: np.ndarray, motion_vectors: np.ndarray, residuals: np.ndarray,
                 positions: dict[int, list[int]], size: int):
        self.iframe, self.motion_vectors, self.residuals, self.positions = iframe, motion_vectors, residuals, positions
        self.height, self.width = iframe.shape[:2]
        self.size = size
        self.accumulated = np.arange(self.height * self.width, dtype=np.int32).reshape(self.height, self.width, 1)
        self.pending: list[tuple[int, np.ndarray, np.ndarray | None]] = []

    def add(self, index: int, block_vectors: np.ndarray, frame: np.ndarray | None) -> None:
        """Queue P frame `index` (its RGB pixels only when it is one of the returned frames)."""
        self.pending.append((index, block_vectors, frame))
        if len(self.pending) == self.size:
            self.finish()

    def finish(self) -> None:
        """Advance the trace through the queued frames, writing the returned ones' fields and residuals."""
        if not self.pending:
            return
        fields = BlockFields.from_side_data([vectors for _, vectors, _ in self.pending], self.height, self.width)
        for offset, (index, _, frame) in enumerate(self.pending):
            self.accumulated = fields.frame(offset).predict([self.accumulated])[0]
            outputs = self.positions.get(index)
            if outputs is not None:
                sources = self.accumulated[..., 0]
                self.motion_vectors[outputs[0]] = vectors_from_indices(sources)
                prediction = _gather_pixels(self.iframe, sources)
                np.subtract(frame, prediction, out=self.residuals[outputs[0]], dtype=np.int16)
        self.pending = []


class _PFrameBatch:
    """Collects sampled P frames and finishes them in batches, so NumPy's per-call cost is paid per batch."""

    # Pixels per batch: big enough to spread the per-call cost, small enough to stay cache-friendly.
    PIXELS = 1 << 19

    def __init__(self, motion_vectors: np.ndarray, residuals: np.ndarray | None):
        self.motion_vectors, self.residuals = motion_vectors, residuals
        self.height, self.width = motion_vectors.shape[2:]
        self.size = max(1, self.PIXELS // (self.height * self.width))
        self.positions: list[int] = []
        self.block_vectors: list[np.ndarray] = []
        self.frames: list[np.ndarray | None] = []
        self.references: list[np.ndarray | None] = []

    def add(self, position: int, block_vectors: np.ndarray, frame: np.ndarray | None, reference: np.ndarray | None) -> None:
        """Queue the P frame written to output `position` (frame and reference only for RGB residuals)."""
        self.positions.append(position)
        self.block_vectors.append(block_vectors)
        self.frames.append(frame)
        self.references.append(reference)
        if len(self.positions) == self.size:
            self.finish()

    def finish(self) -> None:
        """Write the queued frames' motion fields (and residuals) to their output positions."""
        if not self.positions:
            return
        fields = BlockFields.from_side_data(self.block_vectors, self.height, self.width)
        first, count = self.positions[0], len(self.positions)
        in_order = self.positions == list(range(first, first + count))
        where = slice(first, first + count) if in_order else self.positions
        if in_order:
            fields.dense(out=self.motion_vectors[where])
        else:
            self.motion_vectors[where] = fields.dense()
        if self.residuals is not None:
            chained = all(reference is frame for reference, frame in zip(self.references[1:], self.frames, strict=False))
            if chained:  # consecutive P frames: each frame is the next one's reference, pad them once
                padded = fields.pad([self.references[0], *self.frames])
                margin = fields.margin
                frames = padded[1:, margin : margin + self.height, margin : margin + self.width]
                references = padded[:-1]
            else:
                frames, references = np.stack(self.frames), fields.pad(self.references)
            if in_order:
                fields.residuals(frames, references, out=self.residuals[where])
            else:
                self.residuals[where] = fields.residuals(frames, references, out=np.empty(frames.shape, dtype=np.int16))
        self.positions, self.block_vectors, self.frames, self.references = [], [], [], []


def _validate_options(num_frames: int | None, residual: str, accumulate: bool) -> None:
    if residual not in RESIDUAL_MODES:
        raise ConfigError(f"unknown residual mode {residual!r}", fix=f"use one of {', '.join(RESIDUAL_MODES)}")
    whole = isinstance(num_frames, int | np.integer) and not isinstance(num_frames, bool)
    if num_frames is not None and (not whole or num_frames < 1):
        raise ConfigError(f"num_frames must be a positive integer or None, not {num_frames!r}")
    if accumulate and residual != "rgb":
        raise ConfigError("accumulate=True is defined for residual='rgb' only", fix="use residual='rgb'")


def read_compressed(
    path: str | Path, *, num_frames: int | None = None, residual: str = "rgb", accumulate: bool = False
) -> CompressedVideo:
    """Read `path` (one GOP: an I frame then P frames) into a `CompressedVideo`.

    residual="rgb": Δ_t = frame_t − warp(frame_{t−1}, T_t), so warp(frame_{t−1}, T_t) + Δ_t == frame_t.
    residual="codec": the residual MPEG-4's decoder itself adds (decoded again with motion compensation
    off), in RGB units; refused for quarter-pel streams. accumulate=True traces vectors and residuals back
    to the I frame (CoViAR): warp(iframe, T_t) + Δ_t == frame_t. `num_frames` samples P frames uniformly (`sample_p_frames`).
    """
    path = Path(path)
    _validate_options(num_frames, residual, accumulate)
    with _open_video(path) as (container, stream):
        _check_codec(path, stream, residual)
        packets = _demux(path, container, stream)
        if len(packets) < 2:
            raise CompressedVideoError("has a single frame and no P frames", path, "use a clip of at least two frames")
        wanted = sample_p_frames(len(packets) - 1, num_frames) + 1
        # Output positions of each wanted stream index (an index repeats when P frames are few).
        positions: dict[int, list[int]] = {}
        for position, index in enumerate(wanted.tolist()):
            positions.setdefault(index, []).append(position)
        height, width = stream.codec_context.height, stream.codec_context.width
        motion_vectors = np.empty((len(wanted), 2, height, width), dtype=np.int16)
        residuals = np.empty((len(wanted), height, width, 3), dtype=np.int16)
        stream.codec_context.flags2 |= av.codec.context.Flags2.export_mvs
        batch = _PFrameBatch(motion_vectors, residuals if residual == "rgb" else None)
        trace = iframe = previous = None
        letters = []
        for index, frame in enumerate(_decode(path, stream.codec_context, packets)):
            letter = _picture_letter(frame)
            letters.append(letter)
            _check_mic_structure(path, index, letter)
            if (frame.height, frame.width) != (height, width):
                raise _corrupt(path, f"frame {index}", ValueError(f"size {frame.height}×{frame.width} != {height}×{width}"))
            outputs = positions.get(index)
            needs_pixels = index == 0 or (
                residual == "rgb" and (outputs is not None or (not accumulate and index + 1 in positions))
            )
            current = frame.to_ndarray(format="rgb24") if needs_pixels else None
            if index == 0:
                iframe = current
                trace = _AccumulatedTrace(iframe, motion_vectors, residuals, positions, batch.size) if accumulate else None
            elif trace is not None:
                trace.add(index, _block_vectors(frame), current)
            elif outputs is not None:
                block_vectors = _block_vectors(frame)
                if residual == "codec":
                    _check_half_pel(path, index, block_vectors)
                batch.add(outputs[0], block_vectors, current, previous)
            previous = current
        if trace is not None:
            trace.finish()
        batch.finish()
        if residual == "codec":
            _write_codec_residuals(path, stream, packets, positions, residuals)
        for repeats in positions.values():
            motion_vectors[repeats[1:]] = motion_vectors[repeats[0]]
            residuals[repeats[1:]] = residuals[repeats[0]]
        fps = _fps(stream)
    return CompressedVideo(
        path=path,
        iframe=iframe,
        motion_vectors=motion_vectors,
        residuals=residuals,
        frame_types="".join(letters),
        frame_indices=wanted,
        fps=fps,
        size=(height, width),
    )


def read_frames(path: str | Path, *, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Decoded RGB frames (N×H×W×3 uint8) of any video PyAV decodes, all or those at `indices` (in that order)."""
    path = Path(path)
    with _open_video(path) as (container, stream):
        packets = _demux(path, container, stream)
        wanted = np.arange(len(packets)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        outside = wanted[(wanted < 0) | (wanted >= len(packets))]
        if outside.size:
            raise CompressedVideoError(
                f"frame index {int(outside[0])} is out of range: the video has {len(packets)} frames", path,
                f"use indices 0..{len(packets) - 1}",
            )
        wanted_set = set(wanted.tolist())
        height, width = stream.codec_context.height, stream.codec_context.width
        decoded = {}
        for index, frame in enumerate(_decode(path, stream.codec_context, packets)):
            if (frame.height, frame.width) != (height, width):
                raise _corrupt(path, f"frame {index}", ValueError(f"size {frame.height}×{frame.width} != {height}×{width}"))
            if index in wanted_set:
                decoded[index] = frame.to_ndarray(format="rgb24")
    if not decoded:
        return np.zeros((0, height, width, 3), dtype=np.uint8)
    return np.stack([decoded[index] for index in wanted.tolist()])


def probe(path: str | Path) -> VideoInfo:
    """Codec, size, frame rate and the picture type of every frame (decodes, converts nothing)."""
    path = Path(path)
    with _open_video(path) as (container, stream):
        packets = _demux(path, container, stream)
        letters = "".join(_picture_letter(frame) for frame in _decode(path, stream.codec_context, packets))
        return VideoInfo(
            path=path,
            codec=stream.codec_context.name,
            size=(stream.codec_context.height, stream.codec_context.width),
            fps=_fps(stream),
            frame_types=letters,
        )
