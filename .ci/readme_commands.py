"""Print the quick-start commands of README.md, one per line, exactly as written there.

CI runs what this prints, so the README cannot drift from what works: the commands are the
non-comment lines of the first ```bash block under the "## Quick start" heading.
"""

import re
import sys
from pathlib import Path


def quickstart_commands(readme: str) -> list[str]:
    section = readme.split("\n## Quick start", 1)
    if len(section) != 2:
        raise SystemExit("README.md has no '## Quick start' section")
    block = re.search(r"```bash\n(.*?)```", section[1], re.S)
    if block is None:
        raise SystemExit("README.md's quick start has no ```bash block")
    lines = [line.strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    print("\n".join(quickstart_commands(path.read_text())))
