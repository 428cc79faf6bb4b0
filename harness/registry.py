"""Variants and their limitations, as data.

A variant is one implementation under test behind a small adapter function whose
signature is its family's contract (see ``harness.families``). Limitations say which
cases or checks a variant does not support, and why; the runner turns them into
``unsupported`` records, the report and ``attn-oracle list`` print them. Nothing else
decides what is skipped.

Register a variant in any file::

    from harness.registry import Limitation, variant

    @variant("attention", "my_kernel", dtypes=("float32",),
             limitations=[Limitation("no soft-cap", features={"softcap"})])
    def my_kernel(q, k, v, *, scale, causal, window, alignment, mask, softcap):
        ...

and load that file with ``--variants-from PATH`` (pytest and ``attn-oracle``).

What may be a limitation: only what the implementation's interface cannot express (it
has no argument for the case: no soft-cap, no window, no varlen) or what the
implementation refuses with an error (say which error). Where it accepts an input and
returns something, the harness compares that: a wrong answer is a failure, and returning
memory it never wrote is a failure too, never a limitation. A failure of a real library
that is confirmed and not fixed upstream is declared a ``KnownFailure`` (its reason and
the library versions it applies to): the check still runs, strictly, and the failure
stays in the report's Findings.

``repro`` (optional) is the adapter's body written with torch and the library only,
never the harness: ``harness.findings`` pastes it into the standalone script it writes
for each finding of the variant (see that package for the names a snippet reads and
must assign).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

DTYPES = ("float32", "bfloat16", "float16", "float64")
PRECISIONS = ("kernel", "naive")  # harness.tolerance.GRADES
DEFAULT_PRECISION = "kernel"


class VariantError(ValueError):
    """A variant, or a file of variants, that cannot be registered; the message says why."""


@dataclass(frozen=True)
class Limitation:
    """A declared lack of support. Every given criterion must match for it to apply.

    reason:   why, in one sentence a user can act on.
    features: applies to cases having any of these features (see the family's
              ``case_features``); None: any case.
    all_features: applies to cases having every one of these features (a
              combination: ``{"mask:shared", "causal"}``); None: no such condition.
    dtypes:   applies to these case dtypes; None: any dtype.
    checks:   applies to these checks only, named as ``CHECK``, ``CHECK:target`` or
              ``backward`` (every check that needs gradients); None: the whole case.
    """

    reason: str
    features: frozenset[str] | None = None
    dtypes: frozenset[str] | None = None
    checks: frozenset[str] | None = None
    all_features: frozenset[str] | None = None

    def __post_init__(self):
        for name in ("features", "all_features", "dtypes", "checks"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise VariantError(f"Limitation {name} must be a collection of strings, not the string {value!r}")
            if value is not None:
                object.__setattr__(self, name, frozenset(value))

    def applies(self, features: frozenset[str], dtype: str, check_tags: frozenset[str] | None = None) -> bool:
        if self.features is not None and not (self.features & features):
            return False
        if self.all_features is not None and not (self.all_features <= features):
            return False
        if self.dtypes is not None and dtype not in self.dtypes:
            return False
        if self.checks is not None and (check_tags is None or not (self.checks & check_tags)):
            return False
        return True

    def describe(self) -> str:
        parts = []
        if self.features is not None:
            parts.append("cases with " + " or ".join(sorted(self.features)))
        if self.all_features is not None:
            parts.append("cases with " + " and ".join(sorted(self.all_features)))
        if self.dtypes is not None:
            parts.append("dtype " + " or ".join(sorted(self.dtypes)))
        parts.append("checks " + ", ".join(sorted(self.checks)) if self.checks is not None else "all checks")
        return "; ".join(parts)


@dataclass(frozen=True)
class KnownFailure(Limitation):
    """A failure that was reproduced and is declared, like an xfail with its reason
    (OpInfo's ``DecorateInfo(unittest.expectedFailure)``): the checks still run, the
    records keep their ``fail``/``error`` status and carry this reason. pytest reports
    them as xfail, strictly: a declared failure that stops failing fails the test, so a
    stale declaration is noticed. Same matching fields as ``Limitation``, and:

    versions: the library versions the failure was confirmed in, as a requirement
              string (``"executorch>=1.5,<=1.5.1"``, PEP 440 specifiers); with another
              version installed, or the distribution missing, the declaration does
              not apply and the check is judged as any other (a failure fails the
              run: confirm it and widen the range). None: every version.
    cases:    applies to these case ids only: a failure reproduced on particular cases
              whose trigger no feature names (the values of one drawn layout); pin each
              such case in the family's catalogue so that it runs. None: any case.
    """

    versions: str | None = None
    cases: frozenset[str] | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.versions is not None:
            _requirement(self.versions)  # a malformed range is an error where it is declared
        if isinstance(self.cases, str):
            raise VariantError(f"KnownFailure cases must be a collection of case ids, not the string {self.cases!r}")
        if self.cases is not None:
            object.__setattr__(self, "cases", frozenset(self.cases))

    def applies(self, features: frozenset[str], dtype: str, check_tags: frozenset[str] | None = None,
                case_id: str | None = None) -> bool:
        return (super().applies(features, dtype, check_tags) and self.version_applies()
                and (self.cases is None or case_id in self.cases))

    def version_applies(self) -> bool:
        """Whether the installed library is in ``versions`` (always, without a range)."""
        return self.versions is None or _installed_in(self.versions)

    def describe(self) -> str:
        cases = f"case {' or '.join(sorted(self.cases))}; " if self.cases is not None else ""
        return cases + super().describe() + (f"; {self.versions}" if self.versions is not None else "")


def _requirement(text: str):
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise VariantError(f"KnownFailure versions {text!r} is not a requirement like 'executorch>=1.5,<1.6': {exc}") from None


@functools.lru_cache(maxsize=None)
def _installed_in(text: str) -> bool:
    """Whether the installed distribution's version is in the range (asked once per range)."""
    import importlib.metadata

    requirement = _requirement(text)
    try:
        installed = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return requirement.specifier.contains(installed, prereleases=True)


@dataclass
class Variant:
    family: str
    name: str
    fn: Callable
    dtypes: tuple[str, ...] = ("float32", "bfloat16", "float16")
    device: str = "cpu"
    requires: tuple[str, ...] = ()  # modules imported before the first call
    limitations: tuple[Limitation, ...] = ()
    description: str = ""
    source: str = ""  # the file it was registered from
    known_failures: tuple[KnownFailure, ...] = ()
    repro: str = ""  # the adapter's body with torch and the library only, for findings' scripts
    # The tolerance grade its low-dtype results are held to (harness.tolerance): "kernel"
    # (within a few times the fp32-accumulate baseline's error) or "naive" (the plain
    # reference in the dtype). README, "Precision grades", says why kernel is the default.
    precision: str = DEFAULT_PRECISION
    _availability: str | None = field(default=None, repr=False)  # "" when available

    def unavailable_reason(self) -> str:
        """Empty when the variant can run here, else why not (missing package, no device)."""
        if self._availability is None:
            self._availability = _probe(self)
        return self._availability

    def limitation_for(self, features: frozenset[str], dtype: str, check_tags: frozenset[str] | None = None) -> Limitation | None:
        """The first limitation that applies; with ``check_tags`` None, only whole-case ones."""
        if dtype not in self.dtypes:
            return Limitation(f"{self.name} does not take {dtype} inputs (it takes {', '.join(self.dtypes)})")
        for limitation in self.limitations:
            if check_tags is None and limitation.checks is not None:
                continue
            if limitation.applies(features, dtype, check_tags):
                return limitation
        return None

    def known_failure_for(self, features: frozenset[str], dtype: str, check_tags: frozenset[str],
                          case_id: str | None = None) -> KnownFailure | None:
        return next((k for k in self.known_failures if k.applies(features, dtype, check_tags, case_id)), None)


def _probe(v: Variant) -> str:
    if v.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "needs a CUDA GPU; torch.cuda.is_available() is False here"
    return import_problem(v.requires)


def import_problem(modules: tuple[str, ...]) -> str:
    """Empty if every module imports; else which one does not, why, and what to install."""
    from harness.native_io import native_stderr_silenced

    for module in modules:
        try:
            with native_stderr_silenced():  # optional libraries log native warnings on import
                importlib.import_module(module)
        except Exception as exc:  # an optional dependency may fail in many ways
            top = module.split(".")[0]
            return f"cannot import {module} ({type(exc).__name__}: {exc}); install the extra that provides {top}"
    return ""


_REGISTRY: dict[tuple[str, str], Variant] = {}
_BUILTINS_LOADED = False
_LOADED_FILES: dict[Path, list[Variant]] = {}


def register(v: Variant) -> Variant:
    """Validate ``v`` against its family's contract and add it to the registry."""
    from harness.families import get_family

    where = f" (registered from {v.source})" if v.source else ""
    try:
        family = get_family(v.family)
    except KeyError as exc:
        raise VariantError(f"variant {v.name!r}{where}: {exc.args[0]}") from None
    if not callable(v.fn):
        raise VariantError(f"variant {v.name!r}{where}: the adapter is not callable")
    bad_dtypes = set(v.dtypes) - set(DTYPES)
    if bad_dtypes:
        raise VariantError(f"variant {v.name!r}{where}: unknown dtype(s) {sorted(bad_dtypes)}; known: {', '.join(DTYPES)}")
    if v.precision not in PRECISIONS:
        raise VariantError(f"variant {v.name!r}{where}: precision must be one of {', '.join(PRECISIONS)}, not {v.precision!r}")
    if v.device not in ("cpu", "cuda"):
        raise VariantError(f"variant {v.name!r}{where}: device must be 'cpu' or 'cuda', not {v.device!r}")
    problem = family.signature_problem(v.fn)
    if problem:
        raise VariantError(f"variant {v.name!r} for family {v.family!r}{where}: {problem}")
    key = (v.family, v.name)
    if key in _REGISTRY and _REGISTRY[key].source != v.source:
        raise VariantError(f"variant {v.name!r}{where}: family {v.family!r} already has a variant of that name, from {_REGISTRY[key].source}")
    _REGISTRY[key] = v
    return v


def variant(family: str, name: str, *, dtypes: Iterable[str] = ("float32", "bfloat16", "float16"),
            device: str = "cpu", requires: Iterable[str] = (), limitations: Iterable[Limitation] = (),
            description: str = "", known_failures: Iterable[KnownFailure] = (),
            repro: str = "", precision: str = DEFAULT_PRECISION) -> Callable[[Callable], Callable]:
    """Decorator form of ``register``; returns the function unchanged."""

    def decorate(fn: Callable) -> Callable:
        source = inspect.getsourcefile(fn) or "<unknown>"
        doc = description or (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " ")
        register(Variant(family, name, fn, tuple(dtypes), device, tuple(requires), tuple(limitations), doc, source,
                         known_failures=tuple(known_failures), repro=inspect.cleandoc(repro) if repro else "",
                         precision=precision))
        return fn

    return decorate


def load_builtin() -> None:
    """Import every adapter module in ``harness.variants`` (each imports only torch)."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    import harness.variants as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"harness.variants.{info.name}")
    _BUILTINS_LOADED = True


def load_file(path: str | Path) -> list[Variant]:
    """Import a user's file of variants; return the variants it registered."""
    path = Path(path)
    if not path.is_file():
        raise VariantError(f"variants file {path}: no such file")
    if path.resolve() in _LOADED_FILES:  # loading twice in one process is a no-op
        return _LOADED_FILES[path.resolve()]
    load_builtin()
    before = set(_REGISTRY)
    module_name = f"attn_oracle_user_variants_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise VariantError(f"variants file {path}: not a Python file that can be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except VariantError as exc:
        raise VariantError(f"variants file {path}: {exc}") from None
    except SyntaxError as exc:
        raise VariantError(f"variants file {path}: syntax error at line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:
        line = _line_in(exc, path)
        raise VariantError(f"variants file {path} failed to load{line}: {type(exc).__name__}: {exc}") from None
    added = [_REGISTRY[key] for key in _REGISTRY if key not in before]
    if not added:
        raise VariantError(f"variants file {path}: it registered no variant (use @harness.registry.variant)")
    _LOADED_FILES[path.resolve()] = added
    return added


def _line_in(exc: BaseException, path: Path) -> str:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" at line {line}" if line else ""


def variants(family: str | None = None, names: Iterable[str] | None = None) -> list[Variant]:
    """Registered variants, built-ins included, optionally filtered by family and names."""
    load_builtin()
    chosen = [v for v in _REGISTRY.values() if family is None or v.family == family]
    if names is not None:
        wanted = list(names)
        known = {v.name for v in chosen}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise VariantError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        chosen = [v for v in chosen if v.name in wanted]
    return sorted(chosen, key=lambda v: (v.family, v.name))
