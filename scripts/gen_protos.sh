#!/usr/bin/env bash
# Regenerates the Python code of every .proto under protos/ into libs/weft-protos/src.
# One command (`make proto`); the output is committed and CI fails when it drifts.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=libs/weft-protos/src
PY=.venv/bin/python
find "$OUT/weft" -name '*_pb2*.py*' -delete 2>/dev/null || true
mapfile -t files < <(cd protos && find weft -name '*.proto' | LC_ALL=C sort)
(cd protos && "../$PY" -m grpc_tools.protoc -I . \
  --python_out="../$OUT" --pyi_out="../$OUT" --grpc_python_out="../$OUT" "${files[@]}")
# Packages for every generated folder (protoc writes none).
find "$OUT/weft" -type d | while read -r d; do
  [ -f "$d/__init__.py" ] || echo '"""Generated protobuf package (see protos/)."""' > "$d/__init__.py"
done
touch "$OUT/weft/py.typed"
