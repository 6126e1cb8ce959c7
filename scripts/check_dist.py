"""Checks what `python -m build` made before anyone installs it: the wheel carries the
page's static files, the built-in paintings and their provenance, the licence, and complete
metadata (the README as description, licence, classifiers, URLs, every extra); the sdist
carries what rebuilds and tests it. Standard library only.

    python scripts/check_dist.py DIST_DIR        (exits 1 naming every problem found)
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

EXTRAS = ("service", "video", "cluster", "bench", "test", "all")
WHEEL_FILES = ("nstyle/service/static/index.html", "nstyle/service/static/app.js",
               "nstyle/service/static/video.js",
               "nstyle/service/static/style.css", "nstyle/data/starry_night.jpg",
               "nstyle/data/PROVENANCE.md", "nstyle/cli/main.py", "nstyle/io/gallery.py")
# every built-in painting of the source tree (nstyle styles, the page's gallery)
WHEEL_FILES += tuple(sorted(f"nstyle/data/{p.name}" for p in
                            (Path(__file__).resolve().parent.parent / "nstyle" / "data").glob("*.jpg")))
SDIST_FILES = ("pyproject.toml", "README.md", "LICENSE", "nstyle/service/static/app.js",
               "nstyle/data/starry_night.jpg", "tests/conftest.py", "scripts/setup.sh",
               "scripts/install_wheel.sh", "docs/install.md", "Dockerfile")


def check_metadata(text: str, readme: str) -> list[str]:
    meta = Parser().parsestr(text)
    problems = []
    if meta.get("License-Expression") != "MIT":
        problems.append(f"License-Expression is {meta.get('License-Expression')!r}, not 'MIT'")
    if meta.get("Description-Content-Type") != "text/markdown":
        problems.append("the description is not the README as markdown")
    if meta.get_payload().strip() != readme.strip():
        problems.append("the long description is not README.md")
    missing = set(EXTRAS) - set(meta.get_all("Provides-Extra") or [])
    if missing:
        problems.append(f"extras missing: {', '.join(sorted(missing))}")
    if len(meta.get_all("Classifier") or []) < 5:
        problems.append("fewer than 5 classifiers")
    if not meta.get_all("Project-URL"):
        problems.append("no Project-URL")
    if not any(r.startswith("torch") for r in meta.get_all("Requires-Dist") or []):
        problems.append("torch is not a requirement")
    return problems


def check_wheel(path: Path, readme: str) -> list[str]:
    with zipfile.ZipFile(path) as whl:
        names = set(whl.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        problems = [f"wheel lacks {f}" for f in WHEEL_FILES if f not in names]
        dist_info = info.rsplit("/", 1)[0]
        if not any(n.startswith(f"{dist_info}/licenses/LICENSE") for n in names):
            problems.append("wheel lacks the LICENSE file")
        entry_points = whl.read(f"{dist_info}/entry_points.txt").decode()
        if "nstyle = nstyle.cli:entry_point" not in entry_points:
            problems.append("wheel has no 'nstyle' console script")
        if any(n.startswith(("tests/", "bench/", "scripts/")) for n in names):
            problems.append("wheel installs tests/, bench/ or scripts/ as top-level packages")
        return problems + check_metadata(whl.read(info).decode(), readme)


def check_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        root = tar.getnames()[0].split("/")[0]
        names = {n[len(root) + 1:] for n in tar.getnames()}
    return [f"sdist lacks {f}" for f in SDIST_FILES if f not in names]


def main(argv: list[str]) -> int:
    dist = Path(argv[0])
    wheels, sdists = sorted(dist.glob("nstyle-*.whl")), sorted(dist.glob("nstyle-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"check_dist: expected one wheel and one sdist in {dist}, found "
              f"{[p.name for p in wheels + sdists]}", file=sys.stderr)
        return 1
    readme = Path(__file__).resolve().parent.parent.joinpath("README.md").read_text(encoding="utf-8")
    problems = check_wheel(wheels[0], readme) + check_sdist(sdists[0])
    for p in problems:
        print(f"check_dist: {p}", file=sys.stderr)
    if not problems:
        print(f"check_dist: {wheels[0].name} and {sdists[0].name} look complete", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
