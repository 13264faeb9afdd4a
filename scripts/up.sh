#!/usr/bin/env bash
# Set up, start `oakestra up` on this machine, apply the example manifests, show them,
# and keep running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --locked -p oakestra -p oakctl
ADDR=${OAKESTRA_ADDR:-127.0.0.1:10000}
export OAKCTL_SERVER=http://$ADDR
target/release/oakestra up --listen "$ADDR" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT INT TERM
for _ in $(seq 100); do curl -fsS "$OAKCTL_SERVER/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
target/release/oakctl apply -f manifests/
target/release/oakctl get clusters
target/release/oakctl get services -A
echo
echo "oakestra is running at $OAKCTL_SERVER (Ctrl-C stops it). In another shell:"
echo "  export OAKCTL_SERVER=$OAKCTL_SERVER"
echo "  target/release/oakctl get services -w"
wait $PID
