# Sourced by scripts/kube/build.sh and scripts/istiod/build.sh: progress of a long Go
# build on stderr, so that a cold build (10-25 minutes on 2 cores) is visibly alive.
#
#   go_progress_start TAG TOTAL LOG   # TOTAL: packages in the build graph ("" if unknown)
#   go build -v ... 2>"$LOG"          # -v writes one line per package it compiles
#   go_progress_stop
#
# Every 60 s it prints the time so far and how many packages were compiled; packages
# already in the Go build cache are not compiled again and are not counted.

go_progress_start() {
  local tag=$1 total=$2 log=$3 t0=$SECONDS
  : >"$log"
  (
    while sleep 60; do
      n=$(grep -cv '^go: ' "$log" 2>/dev/null || true)
      if [[ -n "$total" ]]; then
        echo "[$tag] ... still building ($((SECONDS - t0))s; ${n:-0} of $total packages compiled, the others come from the Go build cache or are still to do)" >&2
      else
        echo "[$tag] ... still building ($((SECONDS - t0))s; ${n:-0} packages compiled)" >&2
      fi
    done
  ) &
  GO_PROGRESS_PID=$!
}

go_progress_stop() {
  if [[ -n "${GO_PROGRESS_PID:-}" ]]; then
    kill "$GO_PROGRESS_PID" 2>/dev/null || true
    wait "$GO_PROGRESS_PID" 2>/dev/null || true
    GO_PROGRESS_PID=""
  fi
}
