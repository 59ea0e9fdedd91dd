#!/usr/bin/env bash
# The layer's cost in instructions per request, counted by callgrind: the same figure on
# every run, however loaded the machine (see benches/instructions.rs). Pass-through: the
# layer around a router against the router alone; proxied: a GET through the layer to an
# upstream on 127.0.0.1 against the same GET sent through a cache of hyper-util's composable pool
# alone (and, for comparison, through its legacy pooled client); forwarded: the proxied GET
# with `X-Forwarded-For` set (`ProxyLayer::forwarded_for`) against the proxied one.
#
#   benches/instructions.sh            # N1=2000 N2=12000 requests per mode
#   N1=1000 N2=6000 benches/instructions.sh
#
# Needs valgrind (Debian: `apt-get install -y valgrind`) and cargo; installs nothing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

N1="${N1:-2000}"
N2="${N2:-12000}"
if ! [[ "$N1" =~ ^[0-9]+$ && "$N2" =~ ^[0-9]+$ ]] || (( N2 <= N1 )); then
    echo "N1 and N2 must be whole numbers with N2 > N1" >&2
    exit 2
fi
if ! command -v valgrind >/dev/null; then
    echo "missing: valgrind (Debian: apt-get install -y valgrind)" >&2
    exit 1
fi

cargo build --release --bench instructions --message-format=json-render-diagnostics \
    > "${TMPDIR:-/tmp}/instructions-build.json"
bin=$(grep -o '"executable":"[^"]*instructions-[^"]*"' "${TMPDIR:-/tmp}/instructions-build.json" \
    | tail -n 1 | cut -d'"' -f4)
rm -f "${TMPDIR:-/tmp}/instructions-build.json"
if [ ! -x "$bin" ]; then
    echo "could not find the built benches/instructions.rs" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Instructions of one run, counted only while the requests run (`measured`): setting up the
# layer draws on aws-lc's jitter entropy, whose instruction count varies from run to run.
# The upstream is a child process, not followed.
count() {
    valgrind --tool=callgrind --toggle-collect='instructions::measured*' \
        --callgrind-out-file="$work/out" "$bin" "$1" "$2" 2> "$work/err" > /dev/null
    awk '/Collected :/ { print $NF }' "$work/err"
}

declare -A per
for mode in bare layer legacy direct proxied forwarded; do
    a=$(count "$mode" "$N1")
    b=$(count "$mode" "$N2")
    per[$mode]=$(awk -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" \
        'BEGIN { printf "%.1f", (b - a) / (n2 - n1) }')
    printf '%-9s %12s instructions for %6s requests, %12s for %6s: %s per request\n' \
        "$mode" "$a" "$N1" "$b" "$N2" "${per[$mode]}"
done
compare() {
    awk -v base="${per[$2]}" -v with="${per[$1]}" -v what="$1 - $2" 'BEGIN {
        printf "%s: %+.1f instructions per request (%+.2f %%)\n",
            what, with - base, (with / base - 1) * 100
    }'
}
compare layer bare
compare proxied direct
compare forwarded proxied
