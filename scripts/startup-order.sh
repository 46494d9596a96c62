#!/usr/bin/env bash
# Writes build/weir-startup.order: the functions an idle `weir run` executes, which build.rs has the
# linker place first (see build.rs for why). Run it after changes that move much code (a dependency
# upgrade, a new toolchain, large edits); a stale list still links, it just keeps less together.
#
# It measures which 4 KiB pages of the binary's code an idle `weir run` has resident. The kernel
# normally maps 64 KiB around each page a process runs, if those pages are in the page cache, so
# the measurement runs a copy of the binary that is not in the page cache, with the disk's
# readahead at 0: then only the pages that ran are read and mapped. That needs root (it drops
# the page cache and sets readahead for the duration; both are put back on exit) and Python 3.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "startup-order.sh needs root: it drops the page cache and sets the disk's readahead to 0" >&2
  exit 1
fi
for tool in python3 nm kubectl; do
  command -v "$tool" >/dev/null || { echo "startup-order.sh needs $tool" >&2; exit 1; }
done

cargo build --release --bin weir
work=target/startup-order
rm -rf "$work" && mkdir -p "$work"
# On the disk, not tmpfs: tmpfs pages are always in memory, so all of them would be mapped.
cp target/release/weir "$work/weir-idle"

dev=$(basename "$(df --output=source "$work" | tail -1)")
readahead=/sys/class/block/$dev/queue/read_ahead_kb
[ -e "$readahead" ] || readahead=/sys/class/block/$dev/../queue/read_ahead_kb
old_readahead=$(cat "$readahead")
pids=()
cleanup() {
  echo "$old_readahead" > "$readahead"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
target/release/weir emulator --addr "127.0.0.1:$port" --kubeconfig "$work/kubeconfig" \
  > "$work/emulator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/kubeconfig" ] && break; sleep 0.1; done
kubectl --kubeconfig "$work/kubeconfig" apply -f crds/ > /dev/null

echo 0 > "$readahead"
sync
echo 3 > /proc/sys/vm/drop_caches
"$work/weir-idle" run --kubeconfig "$work/kubeconfig" --metrics-addr 127.0.0.1:0 \
  > "$work/weir.log" 2>&1 &
weir=$!
pids+=("$weir")
# Ready, then idle for a while, as the idle bench measures it.
for _ in $(seq 100); do grep -q "controllers:" "$work/weir.log" && break; sleep 0.1; done
sleep 5

python3 - "$weir" "$work/weir-idle" build/weir-startup.order <<'EOF'
import struct, subprocess, sys
pid, binary, out = sys.argv[1], sys.argv[2], sys.argv[3]
name = binary.rsplit("/", 1)[-1]
mappings = [l.split() for l in open(f"/proc/{pid}/maps")]
mine = [m for m in mappings if len(m) > 5 and m[5].endswith("/" + name)]
base = int(mine[0][0].split("-")[0], 16)
resident = set()
with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
    for m in mine:
        if "x" not in m[1]:
            continue
        lo, hi = (int(x, 16) for x in m[0].split("-"))
        for addr in range(lo, hi, 4096):
            pagemap.seek(addr // 4096 * 8)
            if struct.unpack("<Q", pagemap.read(8))[0] >> 63 & 1:
                resident.add((addr - base) // 4096)
symbols = subprocess.run(["nm", "-n", "-S", "--defined-only", binary],
                         capture_output=True, text=True, check=True).stdout
names, seen = [], set()
for line in symbols.splitlines():
    fields = line.split(" ", 3)
    if len(fields) < 4 or fields[2] not in "tTwW":
        continue
    addr, size, sym = int(fields[0], 16), int(fields[1], 16), fields[3]
    pages = range(addr // 4096, (addr + max(size, 1) - 1) // 4096 + 1)
    if sym not in seen and any(p in resident for p in pages):
        seen.add(sym)
        names.append(sym)
with open(out, "w") as f:
    f.write("\n".join(names) + "\n")
print(f"{len(resident)} pages of code ran ({len(resident) * 4} KiB); {len(names)} functions in {out}")
EOF
