#!/usr/bin/env bash
# Interop with the Linux kernel's TCP over a TAP device in a namespace.
#   interop.sh TCP_TAP_BINARY [matrix]     matrix: ci (default) | full | big
#   interop.sh TCP_TAP_BINARY one MODE V BYTES LOSS_PPM   (a single case)
# Each case prints the tcp_tap summary; a failure names the seed.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
top=$(readlink -f "$here/../..")
bin=$(readlink -f "$1")
matrix=${2:-ci}
source "$top/tests/lib/netns.sh"

netns_init
netns_host k
tap="mxtap$$"
tap=${tap:0:15}
netns_exec k ip tuntap add dev "$tap" mode tap
netns_exec k ip link set "$tap" up
netns_exec k ip addr add 198.18.0.1/24 dev "$tap"
netns_exec k ip -6 addr add 2001:db8::1/64 dev "$tap" nodad
# the kernel's RTO floor is 200 ms like ours; keep its queues default

fails=0
run() {  # run MODE V BYTES LOSS_PPM SEED TIMEOUT
	local mode=$1 v=$2 bytes=$3 loss=$4 seed=$5 to=$6 host peer_mode
	if [ "$v" = 6 ]; then host=2001:db8::2; else host=198.18.0.2; fi
	if [ "$mode" = listen ]; then
		peer_mode=client
	else
		peer_mode=server
		if [ "$v" = 6 ]; then host=2001:db8::1; else host=198.18.0.1; fi
	fi
	netns_spawn k "$bin" --tap "$tap" --mode "$mode" --bytes "$bytes" --v6 "$([ "$v" = 6 ] && echo 1 || echo 0)" \
		--loss "$loss" --dup "$loss" --reorder "$loss" --seed "$seed" --timeout "$to"
	local spid=$NETNS_LAST_PID
	sleep 0.1
	local prc=0 src=0
	netns_exec k timeout "$to" /usr/bin/python3 "$here/peer.py" "$peer_mode" "$host" "$bytes" & 
	local ppid=$!
	wait "$ppid" || prc=$?
	wait "$spid" || src=$?
	if [ "$prc" != 0 ] || [ "$src" != 0 ]; then
		echo "FAIL: mode=$mode v$v bytes=$bytes loss/dup/reorder=${loss}ppm seed=$seed (peer rc $prc, stack rc $src)"
		fails=$((fails + 1))
	fi
}

seed=${INTEROP_SEED:-$(( $$ % 10000 + 1 ))}
echo "interop seed base: $seed (set INTEROP_SEED to reproduce)"
case "$matrix" in
ci)
	for mode in listen connect; do
		for bytes in 1 100000; do run "$mode" 4 "$bytes" 0 "$seed" 30; done
		run "$mode" 4 67108864 0 "$seed" 90
		run "$mode" 6 1000000 0 "$seed" 30
		for loss in 10000 50000; do
			for bytes in 1 65536 2000000; do run "$mode" 4 "$bytes" "$loss" "$seed" 60; done
		done
		run "$mode" 6 500000 50000 "$seed" 60
	done
	# 64 MiB with impairments: each case moves 64 MiB each way
	run connect 4 67108864 10000 "$seed" 150
	run listen 4 67108864 50000 "$seed" 150
	;;
full)
	for mode in listen connect; do
		for v in 4 6; do
			for loss in 0 10000 50000; do
				for bytes in 1 1000 65536 1048576 16777216 67108864; do
					run "$mode" "$v" "$bytes" "$loss" "$seed" 900
				done
			done
		done
	done
	;;
big)
	# 64 MiB with loss (slow; run by hand, not in CI)
	for mode in listen connect; do
		for loss in 10000 50000; do run "$mode" 4 67108864 "$loss" "$seed" 1200; done
	done
	;;
one)
	run "${3:-listen}" "${4:-4}" "${5:-100000}" "${6:-0}" "$seed" 60
	;;
*) echo "unknown matrix $matrix"; exit 2 ;;
esac
[ "$fails" = 0 ] && echo "interop: all cases passed" || { echo "interop: $fails case(s) failed"; exit 1; }
