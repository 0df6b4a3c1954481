"""Documentation that stays true: every shell block of README.md and docs/*.md runs as written
(or names what validates it), and every path, function and class the docs cite exists.

Marker syntax (docs/development.md, "Shell blocks in the docs are tested"): an HTML comment on
the line before a block's opening fence, ``<!-- docs-test: KIND [ARG] -->`` with KIND one of
``offline`` (the default: runs in the quick profile), ``slow`` (offline, full run only),
``cluster`` (starts a local cluster itself; full run only; ``mcsched down`` after the file)
and ``validated-by PATH`` (not run; PATH is the test or script that validates it, and must exist).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import tests.shared as shared_data

ROOT = Path(__file__).resolve().parents[1]
SHELL = {"bash", "sh", "shell", "console"}
KINDS = ("offline", "slow", "cluster", "validated-by")
MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<kind>[\w-]+)\s*(?P<arg>.*?)\s*-->$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)")
ACTIVATE = re.compile(r"^\s*(source|\.) \.venv/bin/activate\s*$", re.M)
RAY_CLIENT_VARS = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    kind: str
    arg: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    def script(self) -> str:
        """The block as bash runs it: a console block's ``$ `` lines, the rest as written."""
        if self.lang == "console":
            return "\n".join(ln.strip()[2:] for ln in self.text.splitlines() if ln.strip().startswith("$ "))
        return self.text


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def blocks(doc: Path) -> list[Block]:
    """Every fenced block of ``doc`` in a shell language, with the marker on the line before it."""
    found: list[Block] = []
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group("lang").lower()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```")), len(lines))
        if lang in SHELL:
            prev = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            marker = MARKER.match(prev)
            kind, arg = (marker.group("kind"), marker.group("arg")) if marker else ("offline", "")
            indent = len(m.group("indent"))
            text = "\n".join(ln[indent:] if ln[:indent].isspace() else ln for ln in lines[start + 1 : end])
            found.append(Block(doc, start + 1, lang, kind, arg, text))
        i = end + 1
    return found


ALL = [b for d in documents() for b in blocks(d)]


def test_every_marker_is_known_and_every_validator_exists() -> None:
    bad = [f"{b.where}: docs-test: {b.kind} (known: {', '.join(KINDS)})" for b in ALL if b.kind not in KINDS]
    bad += [f"{b.where}: validated-by {b.arg!r}: no such file" for b in ALL if b.kind == "validated-by" and not (b.arg and (ROOT / b.arg).exists())]
    for doc in documents():  # a marker must sit right before a shell block, or it marks nothing
        lines = doc.read_text().splitlines()
        for n, line in enumerate(lines):
            if MARKER.match(line.strip()):
                following = next((ln for ln in lines[n + 1 :] if ln.strip()), "")
                m = FENCE.match(following)
                if not (m and m.group("lang").lower() in SHELL):
                    bad.append(f"{doc.relative_to(ROOT)}:{n + 1}: a docs-test marker not followed by a shell block")
    assert not bad, "\n".join(bad)


def run_blocks(doc: Path, kinds: set[str], state: Path, timeout: float) -> None:
    """Run ``doc``'s blocks of ``kinds`` in order, in one bash session; fail naming the block."""
    chosen = [b for b in blocks(doc) if b.kind in kinds]
    if any("../shared/" in b.text for b in chosen) and not shared_data.SHARED.is_dir():
        pytest.skip(f"{shared_data.SHARED} {shared_data.ABSENT}")
    parts = ["set -eo pipefail"]
    for b in chosen:
        parts.append(f"echo '::docs-test-block {b.where}' >&2")
        script = ACTIVATE.sub(": the test runner provides the venv", b.script())
        parts.append(script.replace("../shared/", f"{shared_data.SHARED}/"))  # beside the clone, or where MCSCHED_SHARED_DIR says
    bindir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in RAY_CLIENT_VARS}
    env.update(
        {
            "PATH": f"{bindir}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),  # this checkout's scheduler, whichever checkout the venv was installed from
            "MCSCHED_HOME": str(state),
            "COLUMNS": "120",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    )
    try:
        r = subprocess.run(["bash", "-c", "\n".join(parts)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{doc.relative_to(ROOT)}: its blocks took over {timeout:.0f}s\n{exc.stderr!s:.3000}") from None
    if r.returncode != 0:
        started = re.findall(r"^::docs-test-block (\S+)$", r.stderr, re.M)
        raise AssertionError(
            f"the shell block at {started[-1] if started else '?'} failed (exit {r.returncode}):\n"
            f"--- stdout (tail)\n{r.stdout[-3000:]}\n--- stderr (tail)\n{r.stderr[-3000:]}"
        )


def having(kind: str) -> list[Path]:
    """The documents with at least one block of ``kind`` (each is one test case)."""
    return sorted({b.doc for b in ALL if b.kind == kind})


def ids(docs: list[Path]) -> list[str]:
    return [str(d.relative_to(ROOT)) for d in docs]


@pytest.mark.parametrize("doc", having("offline"), ids=ids(having("offline")))
def test_offline_shell_blocks_run_as_written(doc: Path, tmp_path: Path) -> None:
    run_blocks(doc, {"offline"}, tmp_path / "state", timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("doc", having("slow"), ids=ids(having("slow")))
def test_slow_shell_blocks_run_as_written(doc: Path, tmp_path: Path) -> None:
    run_blocks(doc, {"slow"}, tmp_path / "state", timeout=900)


@pytest.mark.slow
@pytest.mark.serial
@pytest.mark.parametrize("doc", having("cluster"), ids=ids(having("cluster")))
def test_cluster_shell_blocks_run_as_written_on_a_local_cluster(doc: Path) -> None:
    """The file's offline and cluster blocks in order (cluster blocks may build on offline ones),
    in a short state dir (Ray's socket paths are length-limited); the cluster is stopped after."""
    state = Path(tempfile.mkdtemp(prefix="mcs-doc-", dir="/tmp"))
    try:
        run_blocks(doc, {"offline", "cluster"}, state, timeout=900)
    finally:
        env = {k: v for k, v in os.environ.items() if k not in RAY_CLIENT_VARS}
        env.update({"MCSCHED_HOME": str(state), "PYTHONPATH": str(ROOT)})
        subprocess.run([sys.executable, "-m", "scheduler", "down"], cwd=ROOT, env=env, capture_output=True, timeout=300)
        shutil.rmtree(state, ignore_errors=True)


# --- what the docs cite exists -------------------------------------------------------------

CODE_SPAN = re.compile(r"`([^`\n]+)`")
REPO_PATH = re.compile(r"^(?:\.\./)?((?:scheduler|deploy|benchmarks|tests|manifests|docs)/[\w./-]*\w)")
CALL = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*)\(")
METHOD = re.compile(r"^([A-Z]\w*)\.(\w+)\(")  # Class.method(
NOT_OURS = ("ray.", "remove_placement_group", "add_port_to_grpc_server", "rate()", "increase()", "SHA-256", "sha256", "list_placement_groups", "records(", "checkpoints(")  # Ray's and PromQL's API; SQL tables


def defined_names() -> tuple[set[str], dict[str, str]]:
    """Every function and class name in the code, and each class's defining module's text."""
    names: set[str] = set()
    classes: dict[str, str] = {}
    for folder in ("scheduler", "benchmarks", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            names |= set(re.findall(r"^\s*(?:async\s+)?(?:def|class)\s+(\w+)", text, re.M))
            for cls in re.findall(r"^class\s+(\w+)", text, re.M):
                classes[cls] = classes.get(cls, "") + text
    return names, classes


def test_every_path_function_and_class_the_docs_cite_exists() -> None:
    names, classes = defined_names()
    bad: list[str] = []
    for doc in documents():
        in_fence = False
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if FENCE.match(line):
                in_fence = not in_fence
                continue
            if in_fence:
                continue
            for span in CODE_SPAN.findall(line):
                span = span.strip()
                path = REPO_PATH.match(span)
                if path and not any(ch in path.group(1) for ch in "<*{"):
                    if not (ROOT / path.group(1)).exists():
                        bad.append(f"{doc.relative_to(ROOT)}:{n}: `{span}`: no such path")
                    continue
                call = CALL.match(span)
                if call and not span.startswith(NOT_OURS) and call.group(1) not in names:
                    bad.append(f"{doc.relative_to(ROOT)}:{n}: `{span}`: no function or class {call.group(1)!r} in the code")
                method = METHOD.match(span)
                if method and method.group(1) in classes and not re.search(rf"def {method.group(2)}\b", classes[method.group(1)]):
                    bad.append(f"{doc.relative_to(ROOT)}:{n}: `{span}`: {method.group(1)} has no method {method.group(2)!r}")
    assert not bad, "\n".join(bad)
