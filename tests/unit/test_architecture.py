"""The codebase's shape rules, checked from the source so they hold without anyone remembering them.

- Layers (docs/architecture.md): ``app/lib`` imports nothing else of the app; ``app/db`` only ``lib`` and itself;
  no domain imports another domain's controllers (shared providers live in ``dependencies.py``); controllers
  build no SQL; the domain packages import each other without a cycle.
- The shop never imports the offline Stripe emulator: it talks to Stripe (or the emulator) over HTTP only.
- The emulator never ships: not in the wheel, not in the Docker image.
"""

from __future__ import annotations

import ast
import fnmatch
import itertools
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app"
EMULATOR = "app.stripe_emulator"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _app_imports(package: str) -> list[tuple[str, str]]:
    """(file, imported app module) for every import of an ``app.`` module in ``app/<package>``."""
    return [
        (str(path.relative_to(ROOT)), name)
        for path in (APP / package).rglob("*.py")
        for name in _imports(path)
        if name == "app" or name.startswith("app.")
    ]


def test_lib_imports_only_lib() -> None:
    offenders = [f"{f} imports {name}" for f, name in _app_imports("lib") if not name.startswith("app.lib")]
    assert offenders == []


def test_db_imports_only_lib_and_db() -> None:
    offenders = [f"{f} imports {name}" for f, name in _app_imports("db") if not name.startswith(("app.lib", "app.db"))]
    assert offenders == []


def test_no_domain_imports_another_domains_controllers() -> None:
    offenders = []
    for f, name in _app_imports("domain"):
        parts = name.split(".")
        importer = Path(f).parts[2]  # app/domain/<noun>/...
        is_controllers = parts[-1] == "controllers" or parts[-1].endswith("_controllers")
        if len(parts) >= 4 and parts[1] == "domain" and parts[2] != importer and is_controllers:
            offenders.append(f"{f} imports {name}")
    assert offenders == []


def test_domain_packages_import_each_other_without_a_cycle() -> None:
    # A cycle means neither package can be read, tested or changed alone (#17 item 3). What two domains both
    # need goes below them: app/db/queries.py, a model's constant, app/lib (docs/architecture.md).
    edges: dict[str, dict[str, set[str]]] = {}
    for f, name in _app_imports("domain"):
        parts = name.split(".")
        importer = Path(f).parts[2]
        if len(parts) >= 3 and parts[1] == "domain" and parts[2] != importer:
            edges.setdefault(importer, {}).setdefault(parts[2], set()).add(f)

    def cycle_from(start: str) -> list[str] | None:
        path: list[str] = [start]
        seen: set[str] = set()

        def walk(node: str) -> list[str] | None:
            for nxt in sorted(edges.get(node, {})):
                if nxt == start:
                    return [*path, start]
                if nxt not in seen:
                    seen.add(nxt)
                    path.append(nxt)
                    if found := walk(nxt):
                        return found
                    path.pop()
            return None

        return walk(start)

    cycles = [c for start in sorted(edges) if (c := cycle_from(start))]
    where = {f"{a} -> {b}: {sorted(edges[a][b])}" for c in cycles for a, b in itertools.pairwise(c)}
    assert cycles == [], sorted(where)


def test_controllers_build_no_sql() -> None:
    # Queries belong to services and repositories: a controller parses, checks access, calls, renders (#17 item 6).
    builders = {"select", "insert", "update", "delete", "func", "exists", "and_", "or_"}
    offenders = []
    for path in APP.rglob("*controllers.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                offenders += [f"{path.relative_to(ROOT)} imports {a.name}" for a in node.names if a.name in builders]
    assert offenders == []


def test_back_office_screens_live_with_their_noun() -> None:
    # The placement rule (#17 item 2): a noun's admin screens are in its own package; app/domain/admin is the shell.
    assert sorted(p.name for p in (APP / "domain" / "admin").glob("*.py")) == ["__init__.py", "controllers.py"]
    # ...and its dashboard is the only route there.
    shell = (APP / "domain" / "admin" / "controllers.py").read_text()
    routes = [line for line in shell.splitlines() if "@get(" in line or "@post(" in line]
    assert routes == ['    @get("/", name="admin:dashboard")']


def test_the_shop_never_imports_the_stripe_emulator() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in APP.rglob("*.py")
        if not path.is_relative_to(APP / "stripe_emulator")
        for name in _imports(path)
        if name == EMULATOR or name.startswith(EMULATOR + ".")
    ]
    assert offenders == []


def test_the_wheel_leaves_the_emulator_out(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "app", source / "app", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        check=True,
        capture_output=True,
        cwd=source,
    )
    (wheel,) = tmp_path.glob("cartwright-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "app/asgi.py" in names  # the shop itself is there
    assert "app/lib/data/common-passwords.txt.gz" in names  # and its data files
    assert [n for n in names if n.startswith("app/stripe_emulator/")] == []


def test_the_docker_image_leaves_the_emulator_out() -> None:
    # The image gets app/ through `COPY app ./app`, filtered by .dockerignore.
    dockerfile = (ROOT / "Dockerfile").read_text()
    copies = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY") and "--from" not in line]
    assert "app" in copies
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert any(fnmatch.fnmatch("app/stripe_emulator", pattern) for pattern in ignored)
    assert not any(pattern.startswith("!") and "stripe_emulator" in pattern for pattern in ignored)
