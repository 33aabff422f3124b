"""MMI Facial Expression Database: posed videos neutral → apex → neutral, 6 classes, ~30 subjects.

Layout (the web database's download): `Sessions/<session id>/` holding the video (`S001-002.avi`),
`session.xml` (`<subject id="1"/>` or a `subjectId` attribute, and `<track filename="S001-002.avi"/>`)
and the annotation XML whose `<Metatag Name="Emotion" Value="4"/>` codes 1 anger, 2 disgust, 3 fear,
4 happiness, 5 sadness, 6 surprise. Sessions without an emotion code (AU-only sessions) are listed as
skipped. The apex is the middle frame.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from cvfer.data.datasets.common import (
    DatasetScan,
    Skipped,
    SourceClip,
    find_folder,
    is_video,
    relative,
    require_root,
    subfolders,
    usable_entries,
)
from cvfer.errors import DatasetError

NAME = "mmi"
EMOTION_CODES = {1: "anger", 2: "disgust", 3: "fear", 4: "happiness", 5: "sadness", 6: "surprise"}
SUBJECT_IN_FILE_NAME = re.compile(r"^S(?P<subject>\d+)", re.IGNORECASE)


def _sessions_folder(root: Path) -> Path:
    sessions = find_folder(root, ("Sessions",))
    if sessions is not None:
        return sessions
    if any((folder / "session.xml").is_file() for folder in subfolders(root)):
        return root
    raise DatasetError(
        "no `Sessions` folder and no session folders with a session.xml found",
        root,
        "pass the MMI root holding Sessions/<id>/session.xml; the expected layout is in docs/datasets.md",
    )


def _xml_root(path: Path) -> ElementTree.Element:
    try:
        return ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise ValueError(f"malformed XML {path.name} ({error})") from None


def _session_info(session_xml: Path) -> tuple[str | None, list[str]]:
    """Subject id and the video file names that `session.xml` names."""
    root = _xml_root(session_xml)
    subject = root.get("subjectId") or next((node.get("id") for node in root.iter("subject") if node.get("id")), None)
    videos = [node.get("filename", "") for node in root.iter("track") if Path(node.get("filename", "")).suffix]
    return subject, videos


def _emotion_code(xml_files: list[Path]) -> str | None:
    """The first `Emotion` metatag value (or `emotion` attribute) found in the session's XML files."""
    for path in xml_files:
        for node in _xml_root(path).iter():
            attributes = {key.lower(): value for key, value in node.attrib.items()}
            if attributes.get("name", "").lower() == "emotion" and "value" in attributes:
                return attributes["value"].strip()
            if "emotion" in attributes:
                return attributes["emotion"].strip()
    return None


def _scan_session(session_dir: Path, root: Path, skipped: list[Skipped]) -> SourceClip | Skipped:
    """The session's clip, or why it has none; its broken symlinks are added to `skipped`."""
    source = relative(session_dir, root)
    session_xml = session_dir / "session.xml"
    entries = usable_entries(session_dir, root, skipped)
    try:
        subject, named_videos = _session_info(session_xml) if session_xml.is_file() else (None, [])
        xml_files = [p for p in entries if p.suffix.lower() == ".xml"]
        code = _emotion_code(xml_files)
    except ValueError as error:
        return Skipped(source, str(error))
    videos = [session_dir / name for name in named_videos if is_video(session_dir / name)]
    videos += [p for p in entries if is_video(p) and p not in videos]
    if not videos:
        return Skipped(source, "empty session (no video file)")
    if code is None:
        return Skipped(source, "no emotion label in the session's XML (AU-only session)")
    if not code.isdigit() or int(code) not in EMOTION_CODES:
        return Skipped(source, f"emotion code {code!r} is not one of 1-6")
    if subject is None:
        match = SUBJECT_IN_FILE_NAME.match(videos[0].name)
        if match is None:
            return Skipped(source, "no subject: session.xml names none and the video name does not start with S<id>")
        subject = match["subject"]
    subject = str(int(subject)) if subject.isdigit() else subject
    return SourceClip(session_dir.name, videos[0], subject, EMOTION_CODES[int(code)], "middle", relative(videos[0], root))


def scan(root: str | Path) -> DatasetScan:
    """Find MMI's emotion-labelled sessions under `root`."""
    root = require_root(root)
    clips: list[SourceClip] = []
    skipped: list[Skipped] = []
    for session_dir in subfolders(_sessions_folder(root)):
        found = _scan_session(session_dir, root, skipped)
        (clips if isinstance(found, SourceClip) else skipped).append(found)
    return DatasetScan(NAME, clips, skipped, list(EMOTION_CODES.values()))
