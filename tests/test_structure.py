"""The code's structure: no module reaches into another module's private names.

A name that starts with one underscore (``_helper``, ``module._x``, ``from ._private import y``)
is private to the file that defines it: another file that imports it couples itself to an
implementation detail that its owner may rename or remove without notice. A helper that two modules
share is a public, documented name of the module that owns it (argument checks live in
:mod:`diffeosens.validation`).

The scan covers every ``.py`` under ``lib/diffeosens``, ``bench`` and ``tests``, the code cells of
``notebooks/*.ipynb`` and the MyST ``{code-cell}`` blocks of ``book/*.md``. It flags

* ``from X import _name`` and ``from X._private import name`` / ``import X._private``;
* attribute access ``name._attr`` (or ``getattr(name, "_attr")``) where ``name`` is bound by an
  import in the same source (a module, or a class or function imported from one), at any depth
  of the attribute chain (``torch._C``, ``np.core._x``);

and not ``self._x`` or other locals, nor dunder names (``__version__``). Project modules
(``diffeosens``, relative imports, sibling scripts such as ``bench/_common.py``) and third-party
ones (``torch._C``) are reported separately; a third-party private access that is truly unavoidable
goes in :data:`THIRD_PARTY_ALLOWED` with the reason.

Tests may reach into the internals of the module they test (``tests/test_data.py`` into
``diffeosens.data.*``), and nothing else.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lib" / "diffeosens"

#: Files and folders (relative to the repository, "/"-terminated for a folder) not checked yet.
# (empty: every file is checked)
PENDING: set[str] = set()

#: Third-party private accesses that cannot be avoided: ``(module, name) -> reason``. Keep it short.
THIRD_PARTY_ALLOWED: dict[tuple[str, str], str] = {
    # documented public API despite the underscore (os._exit: "Exit the process ... without calling
    # cleanup handlers"; sys._getframe is documented in the sys module's reference)
    ("os", "_exit"): "documented public function (immediate exit of a forked child)",
}


@dataclass(frozen=True)
class Finding:
    source: str  # repository-relative path (a notebook or book page: path:cell N)
    line: int
    what: str  # the offending code, e.g. "from .corruption import _check_norm"
    module: str  # the module whose private name is used (absolute where known)
    name: str  # the private name
    third_party: bool

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.what}"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _package_of(path: Path) -> str | None:
    """The dotted package of a file under lib/ (``diffeosens.data`` for lib/diffeosens/data/x.py)."""
    try:
        rel = path.resolve().relative_to(REPO / "lib")
    except ValueError:
        return None
    parts = list(rel.parts[:-1])
    return ".".join(parts) if parts else None


def _module_of(path: Path) -> str | None:
    pkg = _package_of(path)
    if pkg is None:
        return None
    return pkg if path.name == "__init__.py" else f"{pkg}.{path.stem}"


def _resolve(node: ast.ImportFrom, path: Path) -> str:
    """Absolute module name of a ``from ... import``; relative ones resolved against ``path``."""
    if not node.level:
        return node.module or ""
    pkg = _package_of(path)
    if pkg is None:  # a relative import outside the package (cannot run; keep it readable)
        return "." * node.level + (node.module or "")
    parts = pkg.split(".")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_project(module: str, path: Path) -> bool:
    top = module.lstrip(".").split(".")[0]
    if module.startswith(".") or top == "diffeosens":
        return True
    # a script's sibling module (bench/_common.py imported as `_common`) or a local package
    return (path.parent / f"{top}.py").exists() or (path.parent / top / "__init__.py").exists()


def _test_may_use(source: str, module: str) -> bool:
    """tests/test_<x>.py may use the internals of diffeosens.<...x...> (the module it tests)."""
    m = re.fullmatch(r"tests/test_(\w+)\.py", source)
    if not m:
        return False
    parts = module.split(".")
    return parts[0] == "diffeosens" and m.group(1) in parts[1:]


def scan(code: str, path: Path, source: str, line_offset: int = 0) -> list[Finding]:
    """Every private-name access across modules in ``code`` (the text of ``path``)."""
    tree = ast.parse(code, filename=source)
    own = _module_of(path)
    found: list[Finding] = []
    imported: dict[str, str] = {}  # local name -> module (for attribute chains)

    def add(node: ast.AST, what: str, module: str, name: str) -> None:
        if own is not None and module == own:
            return
        if source.startswith("tests/") and _test_may_use(source, module):
            return
        third = not _is_project(module, path)
        if third and (module.split(".")[0], name) in THIRD_PARTY_ALLOWED:
            return
        found.append(Finding(source, getattr(node, "lineno", 0) + line_offset, what, module, name, third))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                bad = [p for p in parts if _private(p)]
                if bad:
                    add(node, f"import {alias.name}", alias.name, bad[0])
                if alias.asname:
                    imported[alias.asname] = alias.name
                else:
                    imported[parts[0]] = parts[0]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node, path)
            dots = "." * node.level
            bad_mod = [p for p in (node.module or "").split(".") if _private(p)]
            if bad_mod:
                add(node, f"from {dots}{node.module} import {', '.join(a.name for a in node.names)}", module, bad_mod[0])
            for alias in node.names:
                if alias.name == "*":
                    continue
                if _private(alias.name):
                    add(node, f"from {dots}{node.module or ''} import {alias.name}", module, alias.name)
                imported[alias.asname or alias.name] = f"{module}.{alias.name}" if module else alias.name

    def chain(node: ast.AST) -> tuple[str, list[str]] | None:
        attrs = []
        while isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in imported:
            return node.id, attrs[::-1]
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            c = chain(node)
            if c is not None:
                root, attrs = c
                module = ".".join([imported[root], *attrs[:-1]])
                add(node, ".".join([root, *attrs]), module, node.attr)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr", "hasattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and _private(node.args[1].value)):
            c = chain(node.args[0])
            if c is not None:
                root, attrs = c
                module = ".".join([imported[root], *attrs])
                add(node, f"{node.func.id}({'.'.join([root, *attrs])}, {node.args[1].value!r})", module, node.args[1].value)
    return found


_CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.M | re.S)


def _strip_magics(code: str) -> str:
    """IPython magics and shell escapes are not Python: blank them out (keeping line numbers)."""
    return "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in code.splitlines())


def _strip_options(block: str) -> str:
    """Blank out a MyST code cell's options (``:tags: [...]`` lines or a ``---`` YAML header)."""
    lines = block.splitlines()
    if lines and lines[0].strip() == "---":
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), 0)
        lines[: end + 1] = [""] * (end + 1)
    else:
        i = 0
        while i < len(lines) and re.match(r"^:[\w-]+:", lines[i]):
            lines[i] = ""
            i += 1
    return "\n".join(lines)


def myst_code(text: str) -> str:
    """The Python of a MyST page's ``{code-cell}`` blocks, on the page's own line numbers."""
    code_lines: list[str] = []
    for m in _CODE_CELL.finditer(text):
        code_lines += [""] * (text[: m.start(1)].count("\n") - len(code_lines))
        code_lines += _strip_magics(_strip_options(m.group(1))).splitlines()
    return "\n".join(code_lines)


def _sources() -> list[tuple[str, Path, str, int]]:
    """(label, path, code, line offset) of every source the rule covers."""
    out = []
    for folder in ("lib/diffeosens", "bench", "tests"):
        for p in sorted((REPO / folder).rglob("*.py")):
            out.append((p.relative_to(REPO).as_posix(), p, p.read_text(), 0))
    for p in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = json.loads(p.read_text())
        code = [("".join(c["source"]) if isinstance(c["source"], list) else c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        # one source per notebook: a name imported in one cell is used in the next
        out.append((p.relative_to(REPO).as_posix(), p, "\n".join(_strip_magics(c) for c in code), 0))
    for p in sorted((REPO / "book").glob("*.md")):
        out.append((p.relative_to(REPO).as_posix(), p, myst_code(p.read_text()), 0))
    return out


def _pending(label: str) -> bool:
    return any(label == p or (p.endswith("/") and label.startswith(p)) for p in PENDING)


def findings(*, include_pending: bool = False) -> list[Finding]:
    out = []
    for label, path, code, offset in _sources():
        if include_pending or not _pending(label):
            out.extend(scan(code, path, label, offset))
    return out


def test_no_module_imports_a_private_name_of_another():
    found = findings()
    project = [f for f in found if not f.third_party]
    third = [f for f in found if f.third_party]
    message = []
    if project:
        message.append("private names of another project module (make the helper a public, documented name of the "
                       "module that owns it, or move it where it belongs):\n  " + "\n  ".join(map(str, project)))
    if third:
        message.append("private names of a third-party module (fragile across versions; use the public API, or add "
                       "(module, name) to THIRD_PARTY_ALLOWED with the reason):\n  " + "\n  ".join(map(str, third)))
    assert not found, "\n".join(message)


def test_the_scan_sees_every_kind_of_private_access(tmp_path):
    """The rule's own check: each form is caught, the allowed ones are not."""
    pkg = PACKAGE / "data" / "example.py"  # a path inside the package, for relative imports
    code = (
        "import torch\nimport torch._dynamo\nimport diffeosens.data.corruption as corr\nfrom torch import nn\n"
        "from .corruption import _check_norm, corrupt\nfrom ._private import helper\nfrom diffeosens import _x\n"
        "from torchvision.models import feature_extraction as fe\n"
        "class A:\n    def f(self):\n        return self._y, __name__, torch.__version__\n"
        "corr._check_norm(1)\nfe._set_default_tracer_kwargs()\nx = torch._C\ny = nn.Module._apply\n"
        "z = getattr(corr, '_hidden')\nimport os\nos._exit(0)\nlocal = object()\nlocal._fine\n"
    )
    got = {(f.what, f.third_party) for f in scan(code, pkg, "lib/diffeosens/data/example.py")}
    assert got == {
        ("import torch._dynamo", True),
        ("from .corruption import _check_norm", False),
        ("from ._private import helper", False),
        ("from diffeosens import _x", False),
        ("corr._check_norm", False),
        ("fe._set_default_tracer_kwargs", True),
        ("torch._C", True),
        ("nn.Module._apply", True),
        ("getattr(corr, '_hidden')", False),
    }
    # book pages: the code cells (options and magics skipped), with the page's line numbers
    page = "# Title\n\n```{code-cell} ipython3\n:tags: [remove-input]\n%matplotlib inline\nfrom diffeosens import sweep\n```\n\n" \
           "```python\nsweep._not_code\n```\n\n```{code-cell} ipython3\n---\ntags: [x]\n---\nsweep._lock\n```\n"
    got = [(f.line, f.what) for f in scan(myst_code(page), REPO / "book" / "x.md", "book/x.md")]
    assert got == [(17, "sweep._lock")]
    # a module's own names are its own business; a test may use the internals of what it tests
    assert scan("from diffeosens.data.example import _own\n", pkg, "lib/diffeosens/data/example.py") == []
    assert scan("from diffeosens.data.scale1d import _x\n", REPO / "tests" / "test_data.py", "tests/test_data.py") == []
    assert scan("from diffeosens.data.scale1d import _x\n", REPO / "tests" / "test_tasks.py", "tests/test_tasks.py") != []


def test_the_package_and_its_light_modules_load_without_torch():
    """``import diffeosens`` is lazy (PEP 562): the results store, statistics and profiles load
    without torch, which a notebook that only writes a result (and the sweep tests, one kernel per
    cell) would otherwise pay seconds for; the re-exported names still resolve, and load torch."""
    import subprocess
    import sys

    light = "diffeosens, diffeosens.results, diffeosens.stats, diffeosens.profiles, diffeosens.validation"
    code = (f"import sys, {light}\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('diffeosens'))\n"
            "from diffeosens import deform, matched_noise, PAPER_DELTA\n"
            "import diffeosens\n"
            "assert diffeosens.sensitivity.measure and 'torch' in sys.modules and PAPER_DELTA == 1.0\n"
            "assert set(diffeosens.__all__) <= set(dir(diffeosens))\n"
            "try:\n    diffeosens.no_such_name\nexcept AttributeError as err:\n    assert 'no_such_name' in str(err)\n"
            "else:\n    raise SystemExit('no AttributeError')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
