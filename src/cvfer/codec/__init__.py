"""Compressed-video codec layer: bitstream -> `CompressedVideo` (I frame, motion vectors, residuals).

`read_compressed` / `read_frames` read (`iter_compressed`: P frame by P frame, in bounded memory),
`reencode` / `write_video` write the MIC format (MPEG-4 Part 2, one GOP, no B frames), `warp` applies a
dense motion field; see docs/codec.md. `iter_frames`, `read_image`,
`read_header`, `count_frames` and `decode_all` are the one door to PyAV for the rest of cvfer.
"""

from cvfer.codec.frames import StreamHeader, count_frames, decode_all, iter_frames, read_header, read_image
from cvfer.codec.motion import warp
from cvfer.codec.reader import CompressedFrame, CompressedVideo, iter_compressed, probe, read_compressed, read_frames
from cvfer.codec.reencode import reencode
from cvfer.codec.writer import write_video

__all__ = [
    "CompressedFrame",
    "CompressedVideo",
    "StreamHeader",
    "count_frames",
    "decode_all",
    "iter_compressed",
    "iter_frames",
    "probe",
    "read_compressed",
    "read_frames",
    "read_header",
    "read_image",
    "reencode",
    "warp",
    "write_video",
]
