"""Compressed-video codec layer: bitstream -> `CompressedVideo` (I frame, motion vectors, residuals).

`read_compressed` / `read_frames` read, `reencode` / `write_video` write the MIC format (MPEG-4 Part 2,
one GOP, no B frames), `warp` applies a dense motion field; see docs/codec.md.
"""

from cvfer.codec.motion import warp
from cvfer.codec.reader import CompressedVideo, probe, read_compressed, read_frames
from cvfer.codec.reencode import reencode
from cvfer.codec.writer import write_video

__all__ = ["CompressedVideo", "probe", "read_compressed", "read_frames", "reencode", "warp", "write_video"]
