"""Print the lowest versions pyproject.toml allows for every direct dependency (the runtime
ones and the test extra), one ``name==version`` a line, for ``pip install -c``.

.ci/run installs them and runs the whole suite, so a floor that the code has outgrown fails CI
instead of a user's install.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

FLOOR = re.compile(r"\s*([A-Za-z0-9._-]+)\s*(?:>=|==)\s*([0-9][^,;\s]*)\s*")


def lowest(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    pins = []
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        found = FLOOR.fullmatch(requirement)
        if found is None:
            raise SystemExit(f"{requirement!r}: give every dependency a floor (name>=version)")
        pins.append(f"{found[1]}=={found[2]}")
    return pins


if __name__ == "__main__":
    print("\n".join(lowest(Path(sys.argv[1]))))
