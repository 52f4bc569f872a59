#!/usr/bin/env bash
# The layering check (docs/ARCHITECTURE.md): fails, naming file and line, on any #include "..." that goes
# against the layers. Data flows one way, include/ -> src/api -> src/core -> (src/cpu | src/gpu ->
# kernels/), everything over src/common; nothing includes upward:
#   src/common     common/ and the public header only: it knows no contexts, backends or kernels
#   kernels/       kernels/ and src/common only
#   src/core       common/ and core/: backends only through core/backend.hpp, never cpu/, gpu/ or kernels/
#   src/cpu        common/, core/ and cpu/: never gpu/ or kernels/
#   src/gpu        common/, core/, gpu/ (gpu/multi included) and kernels/
#   src/gpu/multi  common/, core/, gpu/device.hpp, gpu/multi/ and kernels/: never the backend above it
#   src/api        api/, common/ and core/: never a backend or kernels/
#   bench/, examples/, tests/  the public header; tests/test_sharding.cpp alone compiles gpu/multi's plans,
#                  tests/test_decode_plan.cpp the decode kernel's (kernels/decode_plan.h), and bench/experiments/
#                  (kernel experiments, not built) may compile kernels/ and common/ pieces on their own
# Usage: scripts/check-layers.sh [root]   (default: this checkout). Exit 0: clean; 1: back-includes listed.
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"
status=0

# check <folder or file> <allowed include regex> [grep options]: each of its quoted includes must match.
check() {
    local dir=$1 allowed=$2 hit file rest line target
    shift 2
    [ -e "$dir" ] || return 0
    while IFS= read -r hit; do
        file=${hit%%:*}
        rest=${hit#*:}
        line=${rest%%:*}
        target=$(sed -E 's/^[^"]*"([^"]+)".*$/\1/' <<<"$rest")
        if ! grep -Eq "^($allowed)" <<<"$target"; then
            echo "check-layers: $file:$line includes \"$target\": $dir may include only ($allowed)"
            status=1
        fi
    done < <(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$dir" \
                 --include='*.h' --include='*.hpp' --include='*.c' --include='*.cpp' --include='*.cu' \
                 --include='*.cuh' "$@" || true)
}

public='dsa_indexer\.hp?p?$'
check src/common "common/|$public"
check kernels "common/|kernels/"
check src/core "common/|core/|$public"
check src/cpu "common/|core/|cpu/|$public"
check src/gpu "common/|core/|gpu/|kernels/|$public" --exclude-dir=multi
check src/gpu/multi "common/|core/|gpu/device\.hpp$|gpu/multi/|kernels/|$public"
check src/api "api/|common/|core/|$public"
check bench "$public|test_util\.hpp$|[a-z_]+\.hpp$" --exclude-dir=experiments
check bench/experiments "$public|test_util\.hpp$|[a-z_]+\.hpp$|common/|kernels/"
check examples "$public"
check tests "$public|catch_shim\.hpp$|test_util\.hpp$|[a-z_]+\.hpp$" --exclude=test_sharding.cpp --exclude=test_decode_plan.cpp
check tests/test_sharding.cpp "$public|catch_shim\.hpp$|test_util\.hpp$|gpu/multi/(sharding|worker_pool)\.hpp$"
check tests/test_decode_plan.cpp "catch_shim\.hpp$|kernels/decode_plan\.h$"

# Every folder of src/ is a known layer: a new one must be placed above first.
for dir in src/*/; do
    case "$dir" in
        src/api/ | src/common/ | src/core/ | src/cpu/ | src/gpu/) ;;
        *) echo "check-layers: $dir is no known layer: add it to scripts/check-layers.sh and docs/ARCHITECTURE.md"; status=1 ;;
    esac
done

[ "$status" = 0 ] && echo "check-layers: no back-includes"
exit "$status"
