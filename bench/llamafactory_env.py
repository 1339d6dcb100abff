"""The LlamaFactory side of the benchmarks: its own venv at bench/.venvs/llamafactory (outside git), made idempotently.

    python -m bench.llamafactory_env            # create or update the venv (a no-op when it is up to date)
    python -m bench.llamafactory_env --verify   # + `llamafactory-cli version` and the imports training needs
    python -m bench.llamafactory_env --force    # rebuild from scratch

What LlamaFactory 0.9.5 needs on this machine and why (bench/README.md has the long form):

* torch stays the local CPU wheel torch==2.13.0: every pip call runs with a constraints file pinning it, so no
  dependency can pull a CUDA torch (gigabytes) or another version.
* llamafactory is installed with --no-deps and its declared dependencies are installed explicitly, minus torchvision
  and torchaudio: no PyPI torchvision matches torch 2.13 (a mismatched one fails to import its C++ ops).
  Transformers and LlamaFactory only use torchvision when it is importable, so text-only training does without it.
* llamafactory/data/mm_plugin.py imports torchaudio at module level (every `llamafactory-cli train` reaches it).
  The newest torchaudio on PyPI (2.11.0) is a CUDA build whose compiled extension cannot load beside a CPU torch
  2.13 (libc10_cuda.so missing). torchaudio loads its extension only when the .so files exist, and its Python
  half (functional.resample and friends) is plain torch; so it is installed with --no-deps and its compiled
  libraries are removed. Audio decoding (torchaudio.load) is then unavailable, which text SFT never calls.
* transformers / trl / peft / datasets / accelerate are pinned to the newest versions LlamaFactory 0.9.5 accepts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench.harness import BENCH_DIR

VENV = BENCH_DIR / ".venvs" / "llamafactory"
MARKER = VENV / ".bench-installed.json"
TORCH = "torch==2.13.0"
LLAMAFACTORY = "llamafactory==0.9.5"
TORCHAUDIO = "torchaudio==2.11.0"
# The newest versions inside llamafactory 0.9.5's own pins (transformers<=5.6.0, trl<=0.24.0, peft<=0.18.1, ...).
PINNED = [
    TORCH,
    "transformers==5.6.0",
    "trl==0.24.0",
    "peft==0.18.1",
    "datasets==4.0.0",
    "accelerate==1.11.0",
    "torchdata==0.11.0",
]
# llamafactory 0.9.5's Requires-Dist, less torch (pinned above), torchvision and torchaudio (see the module docstring).
DEPENDENCIES = [
    "accelerate>=1.3.0,<=1.11.0",
    "av>=10.0.0,<=16.0.0",
    "datasets>=2.16.0,<=4.0.0",
    "einops",
    "fastapi",
    "fire",
    "gradio>=4.38.0,<=5.50.0",
    "hf-transfer",
    "matplotlib>=3.7.0",
    "modelscope",
    "numpy",
    "omegaconf",
    "packaging",
    "pandas",
    "peft>=0.18.0,<=0.18.1",
    "protobuf",
    "pydantic",
    "pyyaml",
    "safetensors",
    "scipy",
    "sentencepiece",
    "sse-starlette",
    "tiktoken",
    "torchdata>=0.10.0,<=0.11.0",
    "transformers>=4.55.0,<=5.6.0,!=4.52.0,!=4.57.0",
    "trl>=0.18.0,<=0.24.0",
    "tyro<0.9.0",
    "uvicorn",
]


def python() -> Path:
    """The venv's interpreter."""
    return VENV / "bin" / "python"


def cli() -> Path:
    """The venv's `llamafactory-cli`."""
    return VENV / "bin" / "llamafactory-cli"


def install_spec() -> dict[str, object]:
    """Everything that decides the venv's content; a change rebuilds it."""
    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "llamafactory": LLAMAFACTORY,
        "torchaudio": TORCHAUDIO,
        "pinned": PINNED,
        "dependencies": DEPENDENCIES,
        "layout": 1,
    }


def spec_digest() -> str:
    """A short digest of install_spec()."""
    return hashlib.sha256(json.dumps(install_spec(), sort_keys=True).encode()).hexdigest()[:16]


def is_ready() -> bool:
    """The venv exists and was built from the current spec."""
    if not (python().is_file() and cli().is_file() and MARKER.is_file()):
        return False
    try:
        return json.loads(MARKER.read_text()).get("digest") == spec_digest()
    except (OSError, ValueError):
        return False


def _pip(*args: str, log: bool) -> None:
    command = [str(python()), "-m", "pip", "install", "--disable-pip-version-check", *args]
    if log:
        print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=None if log else subprocess.DEVNULL)


def strip_torchaudio_extension() -> list[Path]:
    """Remove torchaudio's compiled libraries so `import torchaudio` takes its pure-Python path; returns them."""
    found = sorted((VENV / "lib").glob("python3*/site-packages/torchaudio/lib/*.so"))
    for library in found:
        library.unlink()
    return found


def ensure(force: bool = False, log: bool = True) -> Path:
    """Create or update the LlamaFactory venv; returns the path of `llamafactory-cli`. A no-op when up to date."""
    if not force and is_ready():
        return cli()
    if force and VENV.exists():
        shutil.rmtree(VENV)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    if not python().is_file():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    constraints = VENV / "bench-constraints.txt"
    constraints.write_text("\n".join(PINNED) + "\n")
    MARKER.unlink(missing_ok=True)
    _pip("-q", "--upgrade", "pip", log=log)
    _pip("-q", "-c", str(constraints), TORCH, log=log)
    _pip("-q", "-c", str(constraints), *DEPENDENCIES, log=log)
    _pip("-q", "--no-deps", LLAMAFACTORY, TORCHAUDIO, log=log)
    strip_torchaudio_extension()
    check_imports()
    MARKER.write_text(json.dumps({"digest": spec_digest(), "spec": install_spec()}, indent=1) + "\n")
    return cli()


def check_imports() -> dict[str, str]:
    """Import what training touches inside the venv; returns the library versions (raises if anything is off)."""
    code = (
        "import json, importlib.metadata as m, torch, torchaudio, transformers, trl, peft, datasets, accelerate\n"
        "import llamafactory.data.mm_plugin, llamafactory.train.tuner\n"
        "assert torch.__version__.startswith('2.13.0'), torch.__version__\n"
        "names = ['llamafactory', 'torch', 'transformers', 'trl', 'peft', 'datasets', 'accelerate', 'torchaudio']\n"
        "print(json.dumps({n: m.version(n) for n in names}))\n"
    )
    out = subprocess.run([str(python()), "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def versions() -> dict[str, str]:
    """Versions of the LlamaFactory venv's libraries, for the benchmark records ({} when it is missing)."""
    if not python().is_file():
        return {}
    code = (
        "import json, importlib.metadata as m\n"
        "names = ['llamafactory', 'torch', 'transformers', 'trl', 'peft', 'datasets', 'accelerate']\n"
        "print(json.dumps({n: m.version(n) for n in names}))\n"
    )
    out = subprocess.run([str(python()), "-c", code], capture_output=True, text=True, check=False)
    try:
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {}


def verify() -> None:
    """`llamafactory-cli version` and the imports training needs (`python -m bench.train_sft_lora --llamafactory-smoke`
    then trains 2 steps with it)."""
    subprocess.run([str(cli()), "version"], check=True)
    print(json.dumps(check_imports()))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llamafactory_env", description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="delete and rebuild the venv")
    parser.add_argument("--verify", action="store_true", help="also run `version` and check the imports")
    options = parser.parse_args()
    path = ensure(force=options.force)
    print(f"LlamaFactory venv ready: {path}")
    if options.verify:
        verify()
    return 0


if __name__ == "__main__":
    sys.exit(main())
