#!/usr/bin/env bash
# Set up (if needed), lint, type-check and run the tests: the README's loop, a few minutes on two cores.
#
#   bash scripts/test.sh             ruff, mypy, then every test not marked slow
#   bash scripts/test.sh --slow      only the tests marked slow (end-to-end runs; CI's second step)
#   bash scripts/test.sh --all       ruff, mypy, then every test
#
# Other arguments go to pytest (e.g. `bash scripts/test.sh -k made`); a `-m` of their own replaces the
# selection above, as pytest takes the last one.
set -euo pipefail
cd "$(dirname "$0")/.."
select=(-m "not slow")
lint=1
case ${1:-} in
  --slow) select=(-m slow) lint=0; shift ;;
  --all) select=(); shift ;;
esac
bash scripts/setup.sh
. .venv/bin/activate
export QT_QPA_PLATFORM=offscreen
if [ $lint = 1 ]; then
  python -m ruff check .
  python -m mypy
fi
python -m pytest -q -p no:cacheprovider "${select[@]}" "$@"
