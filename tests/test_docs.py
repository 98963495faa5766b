"""Every ```python block in docs/**/*.md runs.

Each page's blocks run in order in one namespace, in a temporary working
directory. Conventions a page may use:

- ``<!-- skip-test -->`` on the line just before a fence: that block is not run
  (for the rare block that cannot run standalone; prefer ```text or ```bash);
- ``<!-- test-requires: framework.models.model, plugins.conv -->`` anywhere on the
  page: the page is skipped, with the reason, while one of those modules does
  not exist yet (``importlib.util.find_spec``); once they exist the page is a
  real test.
"""

from __future__ import annotations

import importlib.util
import re
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

import framework
from framework.registry.manager import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

SKIP_MARKER = "<!-- skip-test -->"
REQUIRES_RE = re.compile(r"<!--\s*test-requires:\s*([\w., ]+?)\s*-->")
FENCE_OPEN_RE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\n`]*)$")


@dataclass
class Block:
    """One fenced code block: its language, first code line (1-based) and code."""

    lang: str
    line: int
    code: str
    skipped: bool


def extract_blocks(text: str) -> list[Block]:
    """Fenced code blocks of a Markdown page, indented fences (tabs, admonitions) included."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE_OPEN_RE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        lang = info.split()[0].lstrip(".{").rstrip("}").lower() if info else ""
        prev = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        close = re.compile(rf"^{re.escape(indent)}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if j == len(lines):
            raise ValueError(f"unclosed code fence opened on line {i + 1}")
        body = "\n".join(lines[i + 1 : j])
        blocks.append(Block(lang, i + 2, textwrap.dedent(body), prev == SKIP_MARKER))
        i = j + 1
    return blocks


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _python_pages() -> list[Path]:
    """Every docs page with Python blocks, and the README (its first-model example must run too)."""
    pages = [*_pages(), ROOT / "README.md"]
    return [p for p in pages if any(b.lang in ("python", "py") for b in extract_blocks(p.read_text()))]


def test_extract_blocks_finds_fences_markers_and_indented_blocks() -> None:
    page = textwrap.dedent(
        """\
        # Title

        ```python
        a = 1
        ```

        <!-- skip-test -->
        ```python title="sketch"
        b = undefined_name
        ```

        === "Tab"

            ```python
            c = a + 1
            ```

        ````text
        ```python
        not a block
        ```
        ````
        """
    )
    blocks = extract_blocks(page)
    assert [(b.lang, b.skipped) for b in blocks] == [
        ("python", False),
        ("python", True),
        ("python", False),
        ("text", False),
    ]
    assert blocks[0].line == 4
    assert blocks[2].code == "c = a + 1"
    assert "not a block" in blocks[3].code


def _nav_pages(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    return []


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    yaml = pytest.importorskip("yaml")
    nav = _nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    on_disk = {p.relative_to(DOCS).as_posix() for p in _pages()}
    assert sorted(on_disk - set(nav)) == [], "pages missing from the nav in mkdocs.yml"
    assert sorted(set(nav) - on_disk) == [], "nav entries without a page"


def test_the_docs_hook_finds_the_mathjax_package() -> None:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(hooks)
    except ModuleNotFoundError as exc:  # mkdocs absent: the docs extra is not installed
        pytest.skip(f"docs tooling not installed: {exc}")
    try:
        root = hooks.mathjax_root()
    except Exception as exc:
        pytest.fail(f"MathJax assets not found: {exc}")
    assert (root / "tex-chtml.js").stat().st_size > 100_000
    assert any((root / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))


@pytest.mark.parametrize("page", _python_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_page_code_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run_page(page, tmp_path, monkeypatch)


def _run_page(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``page``'s python blocks in order in one namespace (skipped while a required module is absent).

    The blocks see the built-in plugins only, whichever other plugins are
    installed (issue 14 item 12): a page's private ``Registry()`` loads
    no third-party entry point, so an installed plugin that registers a name
    a page also uses (the example plugin's ``FeatureScale`` against
    docs/plugins.md's ``feature_scale``) cannot make the page fail. The global
    registry is loaded first, as it is, so this changes nothing for the tests
    that run after.
    """
    text = page.read_text()
    required = [m.strip() for found in REQUIRES_RE.findall(text) for m in found.split(",") if m.strip()]
    absent = [m for m in required if importlib.util.find_spec(m) is None]
    if absent:
        pytest.skip(f"{page.relative_to(ROOT)} needs {', '.join(absent)}, which is not installed")

    REGISTRY.load()
    monkeypatch.setenv("FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    dtype = framework.get_default_dtype()
    try:
        with warnings.catch_warnings():
            # Missing built-in plugins warn while the project is being assembled.
            warnings.simplefilter("ignore", RuntimeWarning)
            for block in extract_blocks(text):
                if block.lang not in ("python", "py") or block.skipped:
                    continue
                where = f"{page.relative_to(ROOT)}:{block.line}"
                code = compile(block.code, where, "exec")
                try:
                    exec(code, namespace)
                except Exception as exc:
                    raise AssertionError(f"code block at {where} raised {type(exc).__name__}: {exc}") from exc
    finally:
        framework.set_default_dtype(dtype)


CONFLICTING_PLUGIN = """
from framework import hookimpl
from framework.base.layer import Layer


class FeatureScale(Layer):
    \"\"\"Registers the name docs/plugins.md's Scale also takes (its alias feature_scale).\"\"\"

    def forward(self, x):
        return x

    def backward(self, grad_out):
        return grad_out


@hookimpl
def register_layers(register):
    register(FeatureScale)
"""


def test_plugins_page_runs_with_a_conflicting_plugin_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14 item 12: a third-party plugin installed beside the project does not break the docs.

    A distribution registering ``FeatureScale`` (as the example plugin does)
    is installed into a folder on ``sys.path``; docs/plugins.md, whose
    private registry registers a ``Scale`` with the alias ``feature_scale``,
    still runs.
    """
    from importlib import metadata

    REGISTRY.load()  # the global registry as it is, before the extra distribution appears
    site = tmp_path / "site"
    site.mkdir()
    (site / "docs_conflict_plugin.py").write_text(textwrap.dedent(CONFLICTING_PLUGIN))
    info = site / "docs_conflict_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: docs-conflict-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[framework]\nconflict = docs_conflict_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    found = [ep for ep in metadata.entry_points(group="framework") if ep.value == "docs_conflict_plugin"]
    assert found, "the extra distribution is not visible to importlib.metadata"
    work = tmp_path / "work"
    work.mkdir()
    _run_page(DOCS / "plugins.md", work, monkeypatch)
