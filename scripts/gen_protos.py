"""Regenerate snakepit_py/_proto/ from protos/ (needs grpcio-tools).

    python scripts/gen_protos.py            # rewrite the committed code
    python scripts/gen_protos.py --out DIR  # write elsewhere (the staleness test does)

The generated modules keep their proto path (snakepit/v1/worker.proto) so
they register under a unique name in protobuf's descriptor pool; their one
absolute import is made relative so they live inside the package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
FILES = ["snakepit/v1/worker.proto"]


def generate(out: Path) -> list[Path]:
    """Generate the Python modules into ``out``; returns the files written."""
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    for rel in FILES:
        code = protoc.main([
            "grpc_tools.protoc", f"-I{PROTOS}", f"-I{include}",
            f"--python_out={out}", f"--grpc_python_out={out}", str(PROTOS / rel),
        ])  # fmt: skip
        if code != 0:
            raise SystemExit(f"protoc failed on {rel} (exit {code})")
    written = []
    for rel in FILES:
        stem = out / rel[: -len(".proto")]
        pkg = rel.rsplit("/", 1)[0].replace("/", ".")
        name = stem.name
        grpc_file = stem.with_name(name + "_pb2_grpc.py")
        text = grpc_file.read_text()
        text = text.replace(f"from {pkg} import {name}_pb2", f"from . import {name}_pb2")
        grpc_file.write_text(text)
        written += [stem.with_name(name + "_pb2.py"), grpc_file]
    # Package markers, so the generated modules import as snakepit_py._proto.snakepit.v1.*
    for d in [out, *{p.parent for p in written}, *{p.parent.parent for p in written}]:
        init = d / "__init__.py"
        if not init.exists():
            init.write_text("")
    return written


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "snakepit_py" / "_proto")
    ns = p.parse_args()
    for path in generate(ns.out):
        print(path.relative_to(ns.out.parent) if ns.out.parent in path.parents else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
