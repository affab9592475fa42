# Shared shell helpers of the harness scripts (sourced, not run).
# log PREFIX MSG... ; wait_for SECONDS WHAT CMD... (polls every 0.2 s, fails after SECONDS);
# free_ports N
log() { local p=$1; shift; printf '[%s %(%H:%M:%S)T] %s\n' "$p" -1 "$*" >&2; }
wait_for() {
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || { log wait "timed out waiting for $what"; return 1; }
    sleep 0.2
  done
}
# free_ports N: N distinct free loopback ports, all held open while chosen (one call each could
# hand out the same port twice).
free_ports() {
  python3 -c 'import socket,sys; s=[socket.socket() for _ in range(int(sys.argv[1]))]; [x.bind(("127.0.0.1",0)) for x in s]; print(" ".join(str(x.getsockname()[1]) for x in s))' "$1"
}
