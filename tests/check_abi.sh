#!/bin/sh
# Compares the dynamic symbols that the built library defines (names only, @version stripped) with the
# committed list abi/symbols.txt. Any added or removed export fails with a diff: update the list on
# purpose, in the same change as the header.
# usage: check_abi.sh NM LIBRARY SYMBOLS_TXT
set -eu
nm_tool=$1
library=$2
expected=$3
actual=$(mktemp "${TMPDIR:-/tmp}/dsa_abi.XXXXXX")
trap 'rm -f "$actual" "$actual.raw"' EXIT

"$nm_tool" -D --defined-only "$library" > "$actual.raw" || { echo "abi_symbols: $nm_tool failed on $library"; exit 1; }
awk 'NF >= 2 { print $NF }' "$actual.raw" | sed 's/@.*//' | LC_ALL=C sort -u > "$actual"
if [ ! -s "$actual" ]; then
    echo "abi_symbols: no exported symbols found in $library"
    exit 1
fi
if ! diff -u "$expected" "$actual"; then
    echo "abi_symbols: the exports of $library differ from $expected ('-' expected, '+' built)"
    exit 1
fi
echo "abi_symbols: $(wc -l < "$actual") exported symbols match $expected"
