#!/usr/bin/env bash
# Host discovery for Horovod elastic: print the hosts that are available now, one `host:slots`
# per line. horovodrun runs this every few seconds, so editing the file adds or removes workers.
#
#   HVDKIT_HOSTS_FILE=hosts.txt hvdkit train recipes/digits_mlp.yaml -np 2 --elastic \
#       --min-np 1 --max-np 4 --host-discovery-script launch/discover_hosts.sh
#
# The file (default: launch/hosts.txt) holds `host:slots` or `host` (1 slot) lines; blank
# lines and `#` comments are skipped. On one machine, list it under two names
# (localhost:1 and 127.0.0.1:1): elastic Horovod blacklists a whole host when a worker fails.
set -euo pipefail
file="${HVDKIT_HOSTS_FILE:-$(dirname "$0")/hosts.txt}"
if [[ ! -r "$file" ]]; then
    echo "discover_hosts.sh: cannot read hosts file $file (set HVDKIT_HOSTS_FILE)" >&2
    exit 1
fi
while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line%%#*}"
    line="${line//[[:space:]]/}"
    [[ -z "$line" ]] && continue
    [[ "$line" == *:* ]] || line="$line:1"
    echo "$line"
done < "$file"
