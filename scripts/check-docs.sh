#!/usr/bin/env bash
# Runs the commands the documentation shows, so that a README cannot tell a newcomer to
# type something that fails. Part of `make test`; alone: bash scripts/check-docs.sh
#
# Every line of the ```bash blocks of the tracked *.md files is run (from the repository
# root, or from the directory of a README that sits next to its own go.mod), with
# `amesh` on PATH built from this tree, and must exit 0. A trailing " # comment" is not
# part of the command. Exceptions:
#   - commands that cannot or must not run here are skipped, each with its reason (the
#     list below: `make test` itself, benchmarks, tests, code generators, Docker,
#     clusters);
#   - `amesh demo` and `amesh agent` (also through `go run ./cmd/amesh`) run until Ctrl-C:
#     they are started in the background, must reach their "in sync" line within 3 minutes
#     (the first `go run` compiles), run alongside the lines after them, and get SIGINT at
#     the end of their block (the program, not `go run`), after which they must exit 0.
# ```console blocks (with "$ " prompts) show sessions that need a cluster; they are not run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
work="$(mktemp -d)"
bg_pids=()
cleanup() {
  for p in "${bg_pids[@]}"; do kill -INT -- "-$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/bin/amesh" ./cmd/amesh
export PATH="$work/bin:$PATH"

# without_env prints a command without its leading VAR=value assignments.
without_env() {
  local cmd=$1
  while [[ "$cmd" =~ ^[A-Z_][A-Z0-9_]*=[^[:space:]]*[[:space:]]+(.*)$ ]]; do cmd=${BASH_REMATCH[1]}; done
  echo "$cmd"
}

# skip_reason prints why a command is not run, or nothing.
skip_reason() {
  case "$(without_env "$1")" in
    "make test") echo "this check runs inside it" ;;
    "make e2e"*|"go test"*|"export KUBEBUILDER_ASSETS"*) echo "a test run: make test runs every tier" ;;
    "make bench"*|"go run ./bench"*) echo "scale benchmarks, minutes to hours" ;;
    "make proto"*|"make generate"*|*"gen.sh"*|*"gen-proto.sh"*) echo "rewrites generated code" ;;
    *docker*|"make controller-image"*) echo "needs a Docker daemon" ;;
    *kubectl*|*istioctl*) echo "needs a cluster" ;;
  esac
}

# long_running reports whether a command runs until Ctrl-C, and prints its "in sync" line.
long_running() {
  local cmd
  cmd=$(without_env "$1")
  [[ "$cmd" == *" -duration "* ]] && return 1
  case "$cmd" in
    "amesh demo"*|"go run ./cmd/amesh demo"*) echo "The file stays in sync" ;;
    "amesh agent"*|"go run ./cmd/amesh agent"*) echo "keeping it in sync" ;;
    *) return 1 ;;
  esac
}

ran=0 skipped=0 failed=0 n=0
fail() { echo "check-docs: FAIL $1" >&2; failed=$((failed + 1)); }

# stop_background ends the long-running commands of a block, newest first.
stop_background() {
  local i
  for ((i = ${#bg_pids[@]} - 1; i >= 0; i--)); do
    local p=${bg_pids[$i]} kids
    # Ctrl-C reaches `go run` too, which then exits 1 whatever the program does; the
    # program's own exit status is what counts, and go run passes it on.
    kids="$(ps -o pid= --ppid "$p" || true)"
    # shellcheck disable=SC2086
    kill -INT ${kids:-$p} 2>/dev/null || true
    local code=0
    wait "$p" || code=$?
    if [[ $code -ne 0 ]]; then
      fail "${bg_desc[$i]}: exit $code after Ctrl-C"
      tail -n 20 "${bg_log[$i]}" >&2
    fi
  done
  bg_pids=() bg_desc=() bg_log=()
}

run_line() {
  local file=$1 dir=$2 cmd=$3
  n=$((n + 1))
  local reason
  reason="$(skip_reason "$cmd")"
  if [[ -n "$reason" ]]; then
    echo "check-docs: skip $file: $cmd  ($reason)"
    skipped=$((skipped + 1))
    return
  fi
  local log="$work/$n.log" marker
  echo "check-docs: run  $file: $cmd"
  ran=$((ran + 1))
  if marker="$(long_running "$cmd")"; then
    (cd "$dir" && exec setsid bash -c "$cmd" >"$log" 2>&1) &
    local pid=$!
    bg_pids+=("$pid") bg_desc+=("$file: $cmd") bg_log+=("$log")
    local t=0
    until grep -q "$marker" "$log" 2>/dev/null; do
      if ! kill -0 "$pid" 2>/dev/null || ((t >= 1800)); then
        fail "$file: $cmd: no \"$marker\" within $((t / 10))s"
        tail -n 20 "$log" >&2
        return
      fi
      sleep 0.1
      t=$((t + 1))
    done
    return
  fi
  if ! (cd "$dir" && timeout 1800 bash -c "$cmd") >"$log" 2>&1 </dev/null; then
    fail "$file: $cmd"
    tail -n 20 "$log" >&2
  fi
}

bg_desc=() bg_log=()
for file in $(git ls-files '*.md'); do
  dir=$ROOT
  [[ -f "$(dirname "$file")/go.mod" && "$(dirname "$file")" != "." ]] && dir="$ROOT/$(dirname "$file")"
  inblock=0
  while IFS= read -r line || [[ -n "$line" ]]; do
    if [[ $inblock -eq 0 && "$line" =~ ^\`\`\`bash[[:space:]]*$ ]]; then
      inblock=1
      continue
    fi
    if [[ $inblock -eq 1 && "$line" =~ ^\`\`\` ]]; then
      inblock=0
      stop_background
      continue
    fi
    [[ $inblock -eq 1 ]] || continue
    cmd="$(sed -E 's/[[:space:]]+#[[:space:]].*$//; s/^[[:space:]]+//; s/[[:space:]]+$//' <<<"$line")"
    [[ -z "$cmd" || "$cmd" == \#* ]] && continue
    run_line "$file" "$dir" "$cmd"
  done <"$file"
  stop_background
done

echo "check-docs: $ran commands run, $skipped skipped, $failed failed"
[[ $failed -eq 0 ]]
