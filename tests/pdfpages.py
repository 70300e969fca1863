"""Count a PDF's pages without a PDF library: pdfinfo where poppler is installed, otherwise
the page objects, which pdfTeX may put inside compressed object streams."""

from __future__ import annotations

import re
import shutil
import subprocess
import zlib
from pathlib import Path

STREAM = re.compile(rb"stream\r?\n(.*?)\r?\nendstream", re.S)
PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")


def page_count(path: Path) -> int:
    if shutil.which("pdfinfo"):
        info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True)
        return int(re.search(r"^Pages:\s+(\d+)", info.stdout, re.M).group(1))
    data = Path(path).read_bytes()
    chunks = [data]
    for match in STREAM.finditer(data):
        try:
            chunks.append(zlib.decompress(match.group(1)))
        except zlib.error:  # an image or font stream that is not deflated
            continue
    return sum(len(PAGE.findall(chunk)) for chunk in chunks)
