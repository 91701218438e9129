"""No stale docs, and a CLI that behaves the same everywhere.

* every ``tessera-stac ...`` command in the README's code blocks exists, and is exercised by a
  test or by the demo; every ``make`` target the README names exists;
* every command has help text and ``--help`` works; data commands offer ``--json``;
* errors are one line (exit 3), the traceback only with ``--debug``; bad usage exits 2.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)

#: Commands whose output is data a machine may want: they must offer --json (when they exist).
JSON_COMMANDS = [
    ("db", "status"),
    ("db", "start"),
    ("demo",),
    ("sample", "tiles"),
    ("sample", "mws"),
    ("publish",),
    ("catalog", "build"),
    ("validate",),
    ("load",),
    ("watersheds", "publish"),
    ("watersheds", "join"),
    ("corestack", "import"),
]


def _commands() -> dict[tuple[str, ...], Any]:
    """Command path -> click command object of the installed CLI."""
    import typer

    from tessera_stac.cli.main import app

    found: dict[tuple[str, ...], Any] = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:
        found[path] = command
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def _shell_lines(markdown: str) -> Iterator[str]:
    """Logical lines of the README's code blocks (continuations joined)."""
    for block in FENCE.findall(markdown):
        yield from block.replace("\\\n", " ").splitlines()


def readme_commands(markdown: str, known: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    """The ``tessera-stac`` command paths used in the README's code blocks."""
    used: set[tuple[str, ...]] = set()
    for line in _shell_lines(markdown):
        for match in re.finditer(r"(?:^|[\s($`])tessera-stac((?:\s+[a-z][\w-]*)+)", line):
            words = match.group(1).split()
            path: tuple[str, ...] = ()
            for word in words:
                if (*path, word) not in known:
                    break
                path = (*path, word)
            if not path:
                path = (words[0],)  # an unknown command: reported by the test
            used.add(path)
    return used


def exercised(path: tuple[str, ...], sources: str) -> bool:
    """Whether a test or the demo runs ``path`` (as an argument list or a command string)."""
    quoted = r"""["']\s*,\s*["']""".join(re.escape(p) for p in path)
    as_list = re.search(rf"""["']{quoted}["']""", sources)
    as_text = re.search(r"tessera-stac\s+" + r"\s+".join(map(re.escape, path)) + r"\b", sources)
    return bool(as_list or as_text)


def _test_and_demo_sources() -> str:
    files = [*ROOT.joinpath("tests").rglob("*.py"), ROOT / "cli" / "demo_run.py"]
    return "\n".join(f.read_text() for f in files if f.name != Path(__file__).name)


def test_readme_commands_exist_and_are_exercised() -> None:
    commands = _commands()
    used = readme_commands(README.read_text(), set(commands))
    assert used, "the README shows no tessera-stac command"
    unknown = sorted(" ".join(p) for p in used if p not in commands)
    assert not unknown, f"README commands the CLI does not have: {unknown}"
    sources = _test_and_demo_sources()
    stale = sorted(" ".join(p) for p in used if p and not exercised(p, sources))
    assert not stale, f"README commands no test or demo step runs: {stale}"


def test_readme_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    used = {
        word
        for line in _shell_lines(README.read_text())
        for word in re.findall(r"(?:^|\s)make\s+([\w-]+)", line)
    }
    assert used, "the README names no make target"
    assert used <= targets, f"README make targets missing from the Makefile: {used - targets}"


def test_readme_command_parser_sees_what_it_should() -> None:
    """The README parser itself: continuations, $(...) and unknown commands."""
    known = {("db",), ("db", "url"), ("publish",)}
    text = (
        "```bash\ntessera-stac publish \\\n  src dst\n"
        'psql "$(tessera-stac db url)"\ntessera-stac frobnicate --x\n```\n'
    )
    assert readme_commands(text, known) == {("publish",), ("db", "url"), ("frobnicate",)}
    assert exercised(("db", "url"), 'cli(["db", "url"])')
    assert not exercised(("db", "url"), 'cli(["db", "start"])')


def test_every_command_and_option_has_help_text() -> None:
    """(``tests/test_foundation.py`` runs every command's ``--help``.)"""
    commands = _commands()
    missing = sorted(" ".join(p) for p, c in commands.items() if p and not (c.help or "").strip())
    assert not missing, f"commands without help text: {missing}"
    options_without_help = sorted(
        f"{' '.join(p)} {param.opts[0]}"
        for p, c in commands.items()
        for param in getattr(c, "params", [])
        if getattr(param, "opts", None)
        and param.opts[0].startswith("--")
        and not (getattr(param, "help", None) or "").strip()
    )
    assert not options_without_help, f"options without help: {options_without_help}"


@pytest.mark.parametrize("path", JSON_COMMANDS, ids=lambda p: " ".join(p))
def test_data_commands_offer_json(path: tuple[str, ...]) -> None:
    commands = _commands()
    if path not in commands:
        pytest.skip(f"tessera-stac {' '.join(path)} is not in this build yet")
    opts = {o for param in commands[path].params for o in getattr(param, "opts", [])}
    assert "--json" in opts, f"tessera-stac {' '.join(path)} has no --json"


def test_errors_are_one_line_and_debug_shows_traceback(
    run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    env = {"TESSERA_STAC_HOME": str(tmp_path / "nothing"), "TESSERA_STAC_DATABASE_URL": ""}
    plain = run_cli(["db", "url"], env=env)
    assert plain.returncode == 3, plain.stderr
    lines = plain.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), plain.stderr
    assert "Traceback" not in plain.stderr
    debug = run_cli(["--debug", "db", "url"], env=env)
    assert debug.returncode == 3
    assert "Traceback" in debug.stderr and lines[0] in debug.stderr


def test_bad_usage_exits_2(run_cli: Callable[..., Any]) -> None:
    unknown = run_cli(["no-such-command"])
    assert unknown.returncode == 2
    bad_option = run_cli(["demo", "--no-such-option"])
    assert bad_option.returncode == 2
    assert "Traceback" not in unknown.stderr + bad_option.stderr


def test_demo_bad_bbox_is_one_clear_line(run_cli: Callable[..., Any]) -> None:
    result = run_cli(["demo", "--bbox", "86.05,24.5,86.2,24.7", "--no-serve"])
    assert result.returncode == 3
    assert result.stderr.strip() == (
        "error: --bbox '86.05,24.5,86.2,24.7': 86.05 is not on the 0.1-degree tile grid"
    )


#: Commands that process many tiles/items/pixels: they must show a progress bar.
LONG_WORK = [("sample", "tiles"), ("publish",), ("load",), ("watersheds", "join")]


@pytest.mark.parametrize("path", LONG_WORK, ids=lambda p: " ".join(p))
def test_long_work_shows_progress(path: tuple[str, ...]) -> None:
    """The command uses the shared progress bar (tqdm on stderr) or tqdm itself."""
    import inspect

    commands = _commands()
    if path not in commands:
        pytest.skip(f"tessera-stac {' '.join(path)} is not in this build yet")
    source = inspect.getsource(commands[path].callback)
    assert "progress(" in source or "tqdm" in source, (
        f"tessera-stac {' '.join(path)} shows no progress bar"
    )


def test_readme_documents_every_setting() -> None:
    """Every environment variable a settings class reads is in the README's configuration."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("config_table", ROOT / "scripts/config_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = README.read_text()
    variables = [var for cls in module.settings_classes() for var, _, _ in module.variables(cls)]
    assert len(variables) > 20
    missing = [var for var in variables if var not in readme]
    assert not missing, f"settings missing from the README: {missing}"


def test_readme_links_exist() -> None:
    """Relative links and images in the README point at files of the repository."""
    targets = re.findall(r"\]\(((?!https?://|#)[^)\s]+)\)", README.read_text())
    assert any(t.startswith("bench/results/") for t in targets)
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README links to missing files: {missing}"


#: Bad input for each data command: it must fail with exit 3 and one line `error: ...` naming
#: the problem. Known gaps of other areas are xfail with the reason (reported to their owners).
BAD_INPUT = [
    pytest.param(["publish", "{tmp}/missing", "{tmp}/out"], "missing", id="publish"),
    pytest.param(["catalog", "build", "{tmp}/missing"], "missing", id="catalog build"),
    pytest.param(
        ["watersheds", "publish", "{tmp}/missing.geojson", "--state", "a", "--district", "b",
         "--block", "c", "--out", "{tmp}/out"],
        "missing.geojson",
        id="watersheds publish",
    ),
    pytest.param(["watersheds", "join", "--year", "2024", "--out", "{tmp}/out"], "--mws",
                 id="watersheds join"),
    pytest.param(["corestack", "import", "{tmp}/missing", "--out", "{tmp}/out"], "missing",
                 id="corestack import"),
    pytest.param(["sample", "tiles", "{tmp}/out", "--bbox", "1,2,3"], "--bbox",
                 id="sample tiles"),
    pytest.param(["demo", "--bbox", "1,2,3", "--no-serve"], "--bbox", id="demo"),
    pytest.param(
        ["load", "{tmp}/missing"],
        "missing",
        id="load",
    ),
    pytest.param(
        ["validate", "{tmp}/missing.json"],
        "missing.json",
        id="validate",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("args", "named"), BAD_INPUT)
def test_bad_input_is_one_clear_line(
    args: list[str], named: str, run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    env = {"TESSERA_STAC_HOME": str(tmp_path / "home"), "TESSERA_STAC_DATABASE_URL": ""}
    result = run_cli([a.replace("{tmp}", str(tmp_path)) for a in args], env=env, timeout=120)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_readme_diagrams_render(chromium: str, playwright_installed: Path) -> None:
    """The README's mermaid diagrams render (npm mermaid in headless Chromium), as on GitHub."""
    import json
    import os
    import subprocess

    out = ROOT / "test-artifacts" / "readme"
    result = subprocess.run(
        ["node", str(ROOT / "browser" / "mermaid.cjs"), str(README), str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "TESSERA_STAC_CHROMIUM": chromium},
    )
    report = json.loads(result.stdout or "[]")
    assert report, f"no mermaid diagram in the README: {result.stderr}"
    for diagram in report:
        assert diagram["ok"], diagram.get("error")
        assert diagram["nodes"] >= 10 and diagram["width"] > 300
        assert Path(diagram["png"]).stat().st_size > 5_000


def test_engine_defaults_are_the_same_for_publish_and_join() -> None:
    commands = _commands()
    defaults = {
        path: {p.name: p.default for p in commands[path].params if p.name in ("engine", "workers")}
        for path in [("publish",), ("watersheds", "join")]
    }
    assert (
        defaults[("publish",)]
        == defaults[("watersheds", "join")]
        == {
            "engine": "process",
            "workers": None,
        }
    )
