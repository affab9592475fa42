# Shared shell helpers of the harness scripts (sourced, not run).
# log PREFIX MSG... ; wait_for SECONDS WHAT CMD... (polls every 0.2 s, fails after SECONDS)
log() { local p=$1; shift; printf '[%s %(%H:%M:%S)T] %s\n' "$p" -1 "$*" >&2; }
wait_for() {
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || { log wait "timed out waiting for $what"; return 1; }
    sleep 0.2
  done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
