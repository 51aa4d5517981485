"""Build the Cython extensions in place and record what was built.

    python -m stages.build_ext --out build/ext.json

`pip install -e .` already compiles the extensions; this stage rebuilds them in
the checkout (after an edit of a .pyx file, say) and writes a small JSON record
(module, file, SHA-256) that later pipeline stages depend on, so Snakemake and
DVC re-run what depends on the compiled code when it changes.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from nasseg.io import atomic_write_json

from .params import stage_parser

EXTENSIONS = ["nasseg.metrics._confusion", "nasseg.search._lstm", "nasseg.models._depthwise"]


def build(root: Path) -> list[dict]:
    """Compile the extensions under `root` in place; return one record per module."""
    if not (root / "setup.py").is_file():
        raise FileNotFoundError(f"{root / 'setup.py'} not found: run from the repository root")
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                          cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("building the Cython extensions failed (is a C compiler and the "
                           f"Python headers installed?):\n{proc.stdout}\n{proc.stderr}")
    # Import in a fresh interpreter, so the record describes the file just built.
    probe = ("import importlib, json, sys; "
             "print(json.dumps({m: importlib.import_module(m).__file__ for m in sys.argv[1:]}))")
    proc = subprocess.run([sys.executable, "-c", probe, *EXTENSIONS], cwd=root,
                          capture_output=True, text=True, check=True)
    files = json.loads(proc.stdout)
    records = []
    for module, file in files.items():
        path = Path(file)
        records.append({"module": module,
                        "file": str(path.relative_to(root.resolve())) if path.is_absolute() else file,
                        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    return records


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m stages.build_ext", __doc__)
    parser.add_argument("--out", type=Path, default=Path("build/ext.json"),
                        help="where to write the build record (default: %(default)s)")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root")
    args = parser.parse_args(argv)
    records = build(args.root.resolve())
    atomic_write_json(args.out, {"python": sys.version.split()[0], "extensions": records})
    for rec in records:
        print(f"built {rec['module']} -> {rec['file']}")


if __name__ == "__main__":
    main()
