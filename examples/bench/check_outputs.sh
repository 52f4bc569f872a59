#!/bin/sh
# Runs `dsa_bench --quick --json FILE --plot FILE` and checks what people read from it: the progress lines
# on stderr, a JSON document with one result per workload, and a well-formed SVG with both panels and a
# line (or marker) per batch size. With a Python interpreter the JSON and the SVG are parsed; without one
# they are checked with grep only.
# usage: check_outputs.sh DSA_BENCH WORK_DIR [PYTHON]
set -eu
bench=$1
work=$2
python=${3:-}
mkdir -p "$work"
rm -f "$work/bench.json" "$work/bench.svg"

fail() {
    echo "bench_outputs: FAILED: $*"
    exit 1
}

"$bench" --quick --json "$work/bench.json" --plot "$work/bench.svg" > "$work/stdout.txt" 2> "$work/stderr.txt" ||
    { cat "$work/stdout.txt" "$work/stderr.txt"; fail "dsa_bench exited with an error"; }
grep -q '^\[1/[0-9]*\] ' "$work/stderr.txt" || fail "no progress line on stderr"
grep -q '"results"' "$work/bench.json" || fail "bench.json has no results"
grep -q '<svg' "$work/bench.svg" && grep -q '</svg>' "$work/bench.svg" || fail "bench.svg is not an SVG document"
grep -q '<circle' "$work/bench.svg" || fail "bench.svg plots no point"

if [ -n "$python" ]; then
    "$python" - "$work/bench.json" "$work/bench.svg" <<'PY' || fail "the JSON or the SVG does not parse"
import json, sys, xml.etree.ElementTree as ET
doc = json.load(open(sys.argv[1]))
assert doc["results"] and all("latency_us" in r for r in doc["results"]), "results without latency"
svg = ET.parse(sys.argv[2]).getroot()
ns = "{http://www.w3.org/2000/svg}"
texts = "".join(t.text or "" for t in svg.iter(ns + "text"))
assert "latency" in texts and "bandwidth floor" in texts, "a panel is missing"
batches = {r["workload"].split("x")[0] for r in doc["results"]
           if r["workload"].replace("x", "", 1).isdigit() and r["latency_us"] > 0}
assert all(f"B = {b}" in texts for b in batches), f"legend lacks a batch size of {sorted(batches)}"
print(f"bench_outputs: {len(doc['results'])} results in the JSON; SVG with {len(batches)} batch size(s)")
PY
fi
echo "bench_outputs: progress lines, JSON and SVG written"
