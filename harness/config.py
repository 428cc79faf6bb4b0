"""The project's own settings: ``[tool.attn-oracle]`` in its ``pyproject.toml``.

The project is the nearest folder, from the working directory up (pytest: its rootdir),
that holds a ``pyproject.toml``; without one, the working directory. Paths are relative
to that folder. Every key is optional; a command-line flag overrides its key::

    [tool.attn-oracle]
    variants = ["tests/my_kernels.py"]     # variant files (--variants-from)
    families = ["attention", "kv_cache"]   # the families to run (--family; default all)
    builtins = false                       # also run attn-oracle's own variants (--builtins)
    results = "reports/attn-oracle"        # records, results.csv, report.html (--out, --attn-results)
    regressions = "regressions"            # the cases attn-oracle fuzz pins (--regressions)
    profile = "ci"                         # Hypothesis profile: ci, dev, fuzz (--profile, --hypothesis-profile)

``builtins`` defaults to true when no variant file is named and false when one is: a
project that names its own variants runs those, unless it asks for attn-oracle's too.
The regressions folder defaults to ``regressions/`` in the project root, never a folder
inside the installed package. Imports nothing heavy.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SECTION = "attn-oracle"
_KEYS = {"variants": list, "families": list, "builtins": bool, "results": str, "regressions": str, "profile": str}


class ConfigError(ValueError):
    """A ``[tool.attn-oracle]`` table that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class ProjectConfig:
    root: Path  # the project's folder: paths below are resolved against it
    source: Path | None  # the pyproject.toml read, None without one
    variants: tuple[Path, ...] = ()
    families: tuple[str, ...] = ()
    builtins: bool | None = None
    results: Path | None = None
    regressions: Path | None = None
    profile: str | None = None

    @property
    def regressions_folder(self) -> Path:
        return self.regressions or self.root / "regressions"

    def with_builtins(self, variant_files) -> bool:
        """Whether attn-oracle's own variants run beside those of ``variant_files``."""
        return self.builtins if self.builtins is not None else not variant_files


_ROOT: list[Path] = []  # set by the pytest plugin: pytest's rootdir is the project


def use_root(root: str | Path) -> None:
    """Make ``root`` the project's folder for this process (the pytest plugin's rootdir)."""
    _ROOT[:] = [Path(root).resolve()]


def project_root(start: str | Path | None = None) -> Path:
    if start is None and _ROOT:
        return _ROOT[0]
    here = Path(start or Path.cwd()).resolve()
    return next((folder for folder in (here, *here.parents) if (folder / "pyproject.toml").is_file()), here)


def load(start: str | Path | None = None) -> ProjectConfig:
    """The settings of the project around ``start`` (default: see ``project_root``)."""
    return _load(project_root(start))


@functools.lru_cache(maxsize=8)
def _load(root: Path) -> ProjectConfig:
    path = root / "pyproject.toml"
    if not path.is_file():
        return ProjectConfig(root, None)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {}).get(SECTION, {})
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.{SECTION}] must be a table")
    for key, value in table.items():
        if key not in _KEYS:
            raise ConfigError(f"{path}: [tool.{SECTION}] has no key {key!r}; known keys: {', '.join(_KEYS)}")
        wanted = _KEYS[key]
        if not isinstance(value, wanted) or (wanted is list and not all(isinstance(v, str) for v in value)):
            kind = "a list of strings" if wanted is list else {bool: "true or false", str: "a string"}[wanted]
            raise ConfigError(f"{path}: [tool.{SECTION}] {key} must be {kind}, not {value!r}")

    def resolved(text):
        return (root / text).resolve() if text is not None else None

    return ProjectConfig(root, path, variants=tuple(resolved(v) for v in table.get("variants", [])),
                         families=tuple(table.get("families", [])), builtins=table.get("builtins"),
                         results=resolved(table.get("results")), regressions=resolved(table.get("regressions")),
                         profile=table.get("profile"))
