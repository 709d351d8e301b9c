#!/usr/bin/env bash
# bench-serve.sh — `serve` under a burst of scrapes, side by side with Debian's
# prometheus-libvirt-exporter (unpacked by the harness, never installed as a service).
#
# Usage (as root): scripts/bench-serve.sh [N=300] [BURST=200]
#
# Defines N extra shut-off domains (diq-benchserve-*) next to the harness guests, starts
# our exporter (release build) and the peer on loopback, and for each prints: the time of
# one scrape (median of 50 in a row), a burst of BURST concurrent scrapes (p50, p99 and
# worst latency, wall time), RSS before and after the burst, and what the scrape holds
# (bytes, domains, OS names, agent states, media), once with plain requests (curl) and once
# with the headers Prometheus sends (OpenMetrics, gzip). The extra domains are undefined at the
# end. Set NO_PEER=1 to skip the peer, BACKEND=virsh to scan through virsh (default:
# native). Every metric family is on (the default). Targets, printed at the end with the
# figures: single scrape p50 <= 1 ms and p99 <= 5 ms; one background collection (the scan
# with its bulk statistics call, from our log) <= 1x one `virsh domstats --raw`; RSS after
# the burst below the peer's; the burst's median at least 10x the peer's speed.

set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-300}"
BURST="${2:-200}"
BACKEND="${BACKEND:-native}"
PREFIX="diq-benchserve-"
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
scripts/harness.sh install curl

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    undefine_domains "$PREFIX"
    rm -rf "$work"
}
trap cleanup EXIT

define_shutoff_domains "$PREFIX" "$N" "$work"
echo "domains on $URI: $(virsh_ list --all --name | grep -c .), running: $(virsh_ list --name | grep -c .)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
wait_http() { # url seconds
    local end=$((SECONDS + $2))
    until curl -fs -o /dev/null "$1"; do
        ((SECONDS < end)) || { echo "no answer from $1" >&2; return 1; }
        sleep 0.2
    done
}
# p50 p99 max (ms) of the seconds on stdin
percentiles() {
    sort -g | awk '{a[NR]=$1*1000} END {
        printf "%.2f %.2f %.2f", a[int((NR+1)/2)], a[int(NR*0.99+0.999)], a[NR] }'
}

# What Prometheus sends: OpenMetrics first, gzip.
PROM_ACCEPT='application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'

declare -A S50 S99 B50 RSS G50
measure() { # name pid url mode(plain|prometheus)
    local name=$1 pid=$2 url=$3 mode=$4
    local body="$work/$name.prom"
    local -a opts=()
    # The exporter's latency: until the last byte of the (gzipped) answer has arrived.
    # Unpacking it is the scraper's own work, timed apart below ("gunzip incl.").
    [[ $mode == prometheus ]] && opts=(-H "Accept: $PROM_ACCEPT" -H "Accept-Encoding: gzip")
    curl -fs "$url" -o "$body"
    # One scrape at a time: what a single Prometheus sees.
    local single
    single=$(for _ in $(seq 50); do curl -fs "${opts[@]}" -o /dev/null -w '%{time_total}\n' "$url"; done | percentiles)
    if [[ $mode == prometheus ]]; then
        G50[$name]=$(for _ in $(seq 50); do curl -fs -H "Accept: $PROM_ACCEPT" --compressed -o /dev/null -w '%{time_total}\n' "$url"; done | percentiles | cut -d' ' -f1)
    fi
    local rss0 rss1 t0 t1 burst
    rss0=$(rss_mb "$pid")
    t0=$(date +%s%3N)
    burst=$(for _ in $(seq "$BURST"); do echo "url = \"$url\""; echo "output = /dev/null"; done |
        curl -fs --no-progress-meter -Z --parallel-max "$BURST" --parallel-immediate "${opts[@]}" -K - -w '%{time_total}\n' | percentiles)
    t1=$(date +%s%3N)
    rss1=$(rss_mb "$pid")
    local domains os agents media
    domains=$(grep -cE '^libvirt_domain_info\{' "$body" || true)
    [[ $domains -gt 0 ]] || domains="$(grep -oE 'domain="[^"]+"' "$body" | sort -u | wc -l) (no info metric)"
    os=$(grep -cE 'os_pretty_name="[^"]' "$body" || true)
    agents=$(grep -cE '^libvirt_domain_agent_status\{' "$body" || true)
    media=$(grep -cE '^libvirt_domain_media_info\{' "$body" || true)
    read -r s50 s99 smax <<<"$single"
    read -r b50 b99 bmax <<<"$burst"
    S50[$name.$mode]=$s50 S99[$name.$mode]=$s99 B50[$name.$mode]=$b50 RSS[$name.$mode]=$rss1
    printf '%-5s %-10s single p50 %6s ms, p99 %6s (worst %6s) | burst of %s: p50 %6s ms, p99 %6s, worst %6s, wall %5s ms | RSS %5s MB -> %5s MB | %6s bytes, domains %s, with OS %s, agent series %s, media series %s\n' \
        "$name" "$mode" "$s50" "$s99" "$smax" "$BURST" "$b50" "$b99" "$bmax" "$((t1 - t0))" "$rss0" "$rss1" \
        "$(wc -c <"$body")" "$domains" "$os" "$agents" "$media"
}

ours_port=$(free_port)
XDG_CACHE_HOME="$work/cache" XDG_CONFIG_HOME="$work" "$BIN" -c "$URI" --backend "$BACKEND" \
    serve --listen "127.0.0.1:$ours_port" --interval 5 2>"$work/ours.log" &
pids+=($!)
ours_pid=$!
wait_http "http://127.0.0.1:$ours_port/healthz" 60
echo
for mode in plain prometheus; do measure ours "$ours_pid" "http://127.0.0.1:$ours_port/metrics" $mode; done

if [[ "${NO_PEER:-0}" != 1 ]]; then
    # Unpacked, never installed: the package would start the exporter as a service.
    peer=""
    if root=$(scripts/harness.sh unpack prometheus-libvirt-exporter); then
        peer="$root/usr/bin/prometheus-libvirt-exporter"
    fi
    if [[ -x "$peer" ]]; then
        peer_port=$(free_port)
        "$peer" --web.listen-address="127.0.0.1:$peer_port" \
            --libvirt.uri="$URI" 2>"$work/peer.log" &
        pids+=($!)
        peer_pid=$!
        wait_http "http://127.0.0.1:$peer_port/metrics" 30
        for mode in plain prometheus; do measure peer "$peer_pid" "http://127.0.0.1:$peer_port/metrics" $mode; done
    else
        echo "peer: prometheus-libvirt-exporter could not be unpacked here; skipped"
    fi
fi

# ------------------------------------------------------------------------------ summary
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
# The first scan asks every agent (and waits for the frozen one); the later ones are what a
# collection costs in the steady state.
scans=$(grep -oE 'scan finished duration_ms=[0-9]+' "$work/ours.log" | grep -oE '[0-9]+$' | tail -n +2 || true)
collect_ms=$(sort -n <<<"$scans" | awk '{a[NR]=$1} END { if (NR) print a[int((NR+1)/2)]; else print 0 }')
domstats_ms=$(for _ in 1 2 3 4 5; do
    t0=$(date +%s%N); virsh_ domstats --raw >/dev/null; t1=$(date +%s%N); echo $(((t1 - t0) / 1000000))
done | sort -n | sed -n 3p)
echo
echo "summary (ours with every metric family, $BACKEND backend):"
echo "  single scrape p50 ${S50[ours.prometheus]} ms (target <= 1), p99 ${S99[ours.prometheus]} ms (target <= 5); p50 with curl's gunzip ${G50[ours]} ms${G50[peer]:+ (peer ${G50[peer]} ms)}"
echo "  one background collection ${collect_ms} ms (median of $(wc -w <<<"$scans") scans) vs one virsh domstats --raw ${domstats_ms} ms: $(ratio "$collect_ms" "$domstats_ms")x (target <= 1)"
if [[ -n "${RSS[peer.prometheus]:-}" ]]; then
    echo "  RSS after the burst: ours ${RSS[ours.prometheus]} MB, peer ${RSS[peer.prometheus]} MB (target: ours below)"
    echo "  burst median: ours ${B50[ours.prometheus]} ms, peer ${B50[peer.prometheus]} ms: $(ratio "${B50[peer.prometheus]}" "${B50[ours.prometheus]}")x faster (target >= 10)"
fi
