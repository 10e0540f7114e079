#!/usr/bin/env bash
# The adopter trial (`make adopter-trial`): labkit's wheel, installed WITHOUT the course extra
# into a fresh environment beside someone else's suite (project/: asyncio auto mode, its own
# pytest_asyncio_loop_factories hook, fixtures named watchdog/task_tracker/virtual_clock,
# hypothesis and anyio tests), run as its users would, with the plugins labkit claims to
# coexist with. Each step prints its command; the first failure stops the trial.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
ROOT=$(cd ../.. && pwd)
WORK=$ROOT/build/adopter-trial
rm -rf "$WORK" && mkdir -p "$WORK"
cp -r project "$WORK/project"
run() { echo "+ $*"; "$@"; }

run "$PYTHON" -m pip wheel --quiet --no-deps -w "$WORK/dist" "$ROOT"
WHEEL=$(ls "$WORK"/dist/labkit-*.whl)
echo "== the wheel's dependencies (the course tools only under the extra):"
unzip -p "$WHEEL" '*.dist-info/METADATA' | grep -E '^(Requires-Dist|Provides-Extra):'
unzip -p "$WHEEL" '*.dist-info/METADATA' | grep -E '^Requires-Dist:' | grep -v 'extra ==' \
    | grep -q -v -E 'pytest|pytest-asyncio' && { echo "FAIL: a dependency beyond pytest/pytest-asyncio"; exit 1; }

run "$PYTHON" -m venv "$WORK/venv"
PY=$WORK/venv/bin/python
run "$PY" -m pip install --quiet "$WHEEL" hypothesis anyio pytest-xdist pytest-randomly pytest-cov \
    pytest-timeout pytest-rerunfailures
cd "$WORK/project"
echo "== baseline: the project's suite without labkit's plugin"
run "$PY" -m pytest -q -p no:labkit -p no:randomly
echo "== with labkit installed, nothing asked"
run "$PY" -m pytest -q -p no:randomly
echo "== the suite on the virtual loop (the project's own hook yields)"
run "$PY" -m pytest -q -p no:randomly --labkit-loop=virtual
"$PY" -m pytest --co -p no:randomly --labkit-loop=virtual | grep "^labkit " \
    | grep "asyncio tests run on the virtual loop (--labkit-loop=virtual), not on the loops of" \
    || { echo "FAIL: the header does not say the suite runs on the virtual loop"; exit 1; }
echo "== labkit's checks turned on for the whole suite (its code is clean: still all pass)"
run "$PY" -m pytest -q -p no:randomly --labkit-loop=virtual -o labkit_hygiene=true \
    -o labkit_watchdog=0.5
echo "== pytest-xdist, pytest-randomly, pytest-cov, pytest-timeout"
run "$PY" -m pytest -q -n 2 --labkit-loop=virtual
for seed in 1 2; do
    run "$PY" -m pytest -q --labkit-loop=virtual -p randomly --randomly-seed=$seed --timeout=60
done
run "$PY" -m pytest -q --cov=retrykit --cov-report=term --labkit-loop=virtual
echo "== a check's verdict is the test's own outcome: strict xfail, reruns, junit"
cat > tests/test_adopting.py <<'PY'
import asyncio

import pytest


@pytest.mark.labkit_hygiene
async def test_leaks_a_task():
    asyncio.create_task(asyncio.sleep(60), name="stray")


@pytest.mark.xfail(strict=True, reason="the known leak")
@pytest.mark.labkit_hygiene
async def test_known_leak():
    asyncio.create_task(asyncio.sleep(60), name="stray")
PY
set +e
"$PY" -m pytest -q -p no:randomly --labkit-loop=virtual --reruns 1 --junitxml=junit.xml \
    tests/test_adopting.py > adopting.txt 2>&1
set -e
tail -1 adopting.txt
grep -q "1 failed, 1 xfailed, 1 rerun" adopting.txt || { cat adopting.txt; echo "FAIL"; exit 1; }
grep -q "<failure" junit.xml && ! grep -q "<error" junit.xml \
    || { echo "FAIL: junit does not show one failure"; exit 1; }
rm tests/test_adopting.py
echo "== the course commands without the extra: one line naming it (gradebook needs none)"
for command in "build" "grade submission.ipynb" "lab" "gradebook export --csv"; do
    echo "+ labkit $command"
    # shellcheck disable=SC2086  # the command's words
    if output=$("$WORK/venv/bin/labkit" $command 2>&1); then
        echo "FAIL: labkit $command succeeded here"; exit 1
    fi
    echo "$output"
    [ "$(echo "$output" | wc -l)" -eq 1 ] || { echo "FAIL: more than one line"; exit 1; }
    case $command in
        gradebook*) ;;
        *) echo "$output" | grep -q "pip install 'labkit\[course\]'" \
            || { echo "FAIL: the line does not name labkit[course]"; exit 1; } ;;
    esac
done
echo "== import labkit loads none of the course tools"
run "$PY" -c "import sys, labkit, labkit.plugin; bad = {'nbformat', 'nbclient', 'IPython', 'ipytest', 'jupytext', 'matplotlib'} & set(sys.modules); assert not bad, bad"
echo "adopter trial: OK"
