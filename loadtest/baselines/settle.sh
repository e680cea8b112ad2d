# Sourced by the baseline scripts. settle LABEL: wait (at most 75 s) until fewer than 500
# TIME_WAIT sockets are left, so that a run's connect() calls do not search a crowded ephemeral
# port range that the previous run filled; prints how many were left and how long it waited.
settle() {
  command -v ss >/dev/null || { echo "$1: ss (iproute2) not found; not waiting for TIME_WAIT sockets"; return; }
  local waited=0
  while [ "$(ss -Htan state time-wait | wc -l)" -gt 500 ] && [ $waited -lt 75 ]; do
    sleep 1; waited=$((waited + 1))
  done
  echo "$1: started with $(ss -Htan state time-wait | wc -l) TIME_WAIT sockets after waiting ${waited} s"
}
