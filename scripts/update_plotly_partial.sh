#!/usr/bin/env bash
# Refresh plotly.js's cartesian bundle (voila_app/vendor/plotly-cartesian.min.js: the app's figures and the
# static site, voila_app/plotly_partial.py) to the plotly.js version the installed plotly (Python) bundles.
# tests/test_voila_app.py fails until they match; meanwhile the app and the site use plotly's full bundle.
#   scripts/update_plotly_partial.sh        (needs npm and the npm registry)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
version=$("$PY" -c "from plotly.offline.offline import get_plotlyjs_version; print(get_plotlyjs_version())")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "plotly.js-cartesian-dist-min@$version" >/dev/null && tar xzf ./*.tgz)
cp "$tmp/package/plotly-cartesian.min.js" voila_app/vendor/plotly-cartesian.min.js
cp "$tmp/package/LICENSE" voila_app/vendor/plotly-LICENSE
echo "plotly-cartesian.min.js is now plotly.js $version"
