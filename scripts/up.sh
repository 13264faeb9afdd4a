#!/usr/bin/env bash
# Set up, start `oakestra up` on this machine, apply the example manifests, show them,
# and keep running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --locked -p oakestra -p oakctl
ADDR=${OAKESTRA_ADDR:-127.0.0.1:10000}
DATA=${OAKESTRA_DATA:-$HOME/.local/share/oakestra}
export KUBECONFIG=$DATA/admin.kubeconfig
# OAKESTRA_LOCATION=LAT,LON puts this device on the dashboard's map (its cluster's
# spec.location); without it the cluster is listed under the map, with a form to set it.
target/release/oakestra up --listen "$ADDR" --data-dir "$DATA" ${OAKESTRA_LOCATION:+--location "$OAKESTRA_LOCATION"} &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT INT TERM
# The API serves TLS with the root's own CA; the admin kubeconfig `up` writes trusts it.
for _ in $(seq 100); do
  target/release/oakctl get namespaces >/dev/null 2>&1 && break
  sleep 0.1
done
target/release/oakctl apply -f manifests/
target/release/oakctl get clusters
target/release/oakctl get services -A
echo
echo "oakestra is running at https://$ADDR (Ctrl-C stops it); the dashboard is https://$ADDR/ui/"
echo "(user admin, password in $DATA/root/oakestra-api-password). In another shell:"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  target/release/oakctl get services -w      # or: kubectl get services -w"
wait $PID
