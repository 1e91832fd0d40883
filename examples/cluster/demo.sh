#!/usr/bin/env bash
# A three-node Limmat relay cluster on one machine, in about half a minute: three `limmat relay`
# nodes on 127.0.0.2-4 (Linux routes all of 127.0.0.0/8 to loopback), six `limmat tunnel`
# devices configured with node-2, which redirects each to its domain's owner. The script prints
# which node owns each device, kills the node that owns most of them (SIGKILL, no warning),
# and shows its devices answering again through the surviving nodes, with the time it took.
# Then it stops everything it started, by itself.
#
# Needs `limmat` on the PATH (or LIMMAT=/path/to/limmat), curl and python3 (the devices' web
# server and the JSON of the admin API). Ports: PORT (public, 8580), ADMIN (9580), INTERNAL
# (internal listener and gossip, 7956) on each node, ORIGIN (8190) on 127.0.0.1.
set -euo pipefail

LIMMAT=${LIMMAT:-limmat}
PORT=${PORT:-8580}
ADMIN=${ADMIN:-9580}
INTERNAL=${INTERNAL:-7956}
ORIGIN=${ORIGIN:-8190}
DEVICES=${DEVICES:-6}
# Every wait below gives up after this many seconds, and the whole demo after four times it.
PATIENCE=${PATIENCE:-30}

for tool in "$LIMMAT" curl python3; do
  command -v "$tool" > /dev/null || { echo "demo: $tool is not on the PATH" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/limmat-cluster-demo.XXXXXX")
pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
  wait 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "demo: interrupted" >&2; exit 130' INT TERM
# A watchdog: however it goes, the demo ends (it sleeps in short steps, so that stopping it
# leaves no sleep behind for long).
(
  end=$((SECONDS + PATIENCE * 4))
  while ((SECONDS < end)); do sleep 1; done
  echo "demo: took too long, stopping" >&2
  kill -TERM $$
) 2> /dev/null &
pids+=($!)

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f} s')" "$1" "$(now)"; }
# until_true WHAT COMMAND...: runs COMMAND every 0.1 s until it succeeds, at most PATIENCE s.
until_true() {
  local what=$1 deadline=$((SECONDS + PATIENCE))
  shift
  until "$@" > /dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "demo: never happened: $what (logs in $work are removed at exit:)" >&2
      tail -n 5 "$work"/*.log >&2 || true
      exit 1
    fi
    sleep 0.1
  done
}
live() { # live NODE: the live set node-NODE sees, as "node-2 node-3 node-4"
  curl -sf "127.0.0.$1:$ADMIN/api/cluster" |
    python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)["live"]))'
}
live_is() { [ "$(live "$1")" = "$2" ]; }
owner() { # owner DOMAIN: the owner in node-2's view
  curl -s "127.0.0.2:$ADMIN/api/domains/$1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["owner"])'
}
answers() { # answers NODE DOMAIN: the device's page comes back through node-NODE
  curl -sf --max-time 10 "http://127.0.0.$1:$PORT/$2/" | grep -q "hello from $2"
}

echo "Starting three relay nodes on 127.0.0.2-4 (public :$PORT, admin :$ADMIN, gossip :$INTERNAL)"
head -c 32 /dev/urandom | base64 > "$work/cluster.secret"
seeds=()
for i in 2 3 4; do seeds+=(--cluster-seed "127.0.0.$i:$INTERNAL"); done
for i in 2 3 4; do
  "$LIMMAT" relay --listen "127.0.0.$i:$PORT" --hostname relay.localhost \
    --admin "127.0.0.$i:$ADMIN" --node-id "node-$i" --public-host "127.0.0.$i" \
    --internal-listen "127.0.0.$i:$INTERNAL" --cluster-secret-file "$work/cluster.secret" \
    "${seeds[@]}" 2> "$work/node-$i.log" &
  pids+=($!)
  node_pid[i]=$!
done
for i in 2 3 4; do until_true "node-$i sees three members" live_is "$i" "node-2 node-3 node-4"; done
echo "  every node sees: $(live 2)"

echo "Starting $DEVICES devices (limmat tunnel), each configured with node-2"
domains=()
for d in $(seq 1 "$DEVICES"); do
  domains+=("sensor-$d")
  mkdir -p "$work/www/sensor-$d"
  echo "hello from sensor-$d" > "$work/www/sensor-$d/index.html"
done
python3 -m http.server "$ORIGIN" --bind 127.0.0.1 --directory "$work/www" > "$work/origin.log" 2>&1 &
pids+=($!)
for d in "${domains[@]}"; do
  "$LIMMAT" tunnel server "127.0.0.1:$ORIGIN" "127.0.0.2:$PORT" "$d" 2> "$work/$d.log" &
  pids+=($!)
done
for d in "${domains[@]}"; do
  for i in 2 3 4; do until_true "$d answers through node-$i" answers "$i" "$d"; done
done

echo "Every device answers through every node. Owners (rendezvous hashing over the live set):"
declare -A owned=([node-3]=0 [node-4]=0)
for d in "${domains[@]}"; do
  o=$(owner "$d")
  owned[$o]=$((${owned[$o]:-0} + 1))
  echo "  $d  ->  $o"
done
# The devices know node-2's address only, so the victim is node-3 or node-4, whichever owns more.
victim=4
((${owned[node-3]} > ${owned[node-4]})) && victim=3
moved=()
for d in "${domains[@]}"; do [ "$(owner "$d")" = "node-$victim" ] && moved+=("$d"); done

survivors="node-2 node-3 node-4"
survivors=${survivors/node-$victim /}
survivors=${survivors/ node-$victim/}
echo "Killing node-$victim (SIGKILL), which owns: ${moved[*]:-nothing}"
killed=$(now)
kill -9 "${node_pid[victim]}"
{ wait "${node_pid[victim]}"; } 2> /dev/null || true # (no "Killed" notice from bash)
until_true "node-$victim leaves the live sets" live_is 2 "$survivors"
echo "  node-2 sees $(live 2) after $(since "$killed")"

others=()
for i in 2 3 4; do [ "$i" != "$victim" ] && others+=("$i"); done
for d in "${moved[@]}"; do
  until_true "$d answers again" answers "${others[0]}" "$d"
  answers "${others[1]}" "$d"
  echo "  $d answers again through node-${others[0]} and node-${others[1]}, owned by $(owner "$d"), after $(since "$killed")"
done
for d in "${domains[@]}"; do
  for i in "${others[@]}"; do answers "$i" "$d"; done
done
echo "All $DEVICES devices answer through the surviving nodes. Stopping everything."
