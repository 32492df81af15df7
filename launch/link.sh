#!/usr/bin/env bash
# Step 7 of setup.sh: a link to this checkout's hvdkit in the first writable folder on PATH of
# /usr/local/bin and ~/.local/bin, so that a new shell finds `hvdkit` without activating .venv.
#
#   bash launch/link.sh [TARGET]     (TARGET: default this checkout's .venv/bin/hvdkit)
#
# Left alone, with one line saying so: a file there that is not a link, and a link to another
# hvdkit that exists (another checkout's: a run typed in that checkout must not silently run
# this one's code). HVDKIT_LINK=force re-points such a link; a dangling one is re-pointed.
# HVDKIT_NO_LINK=1 skips this; HVDKIT_LINK_DIRS lists the folders tried instead.
set -euo pipefail

cd "$(dirname "$0")/.."
target=${1:-$(pwd)/.venv/bin/hvdkit}
say() { echo "[setup] $1"; }

if [ "${HVDKIT_NO_LINK:-0}" = 1 ]; then
  say "ready: hvdkit in $(dirname "$target") (HVDKIT_NO_LINK=1: no link on PATH)"
  exit 0
fi
for dir in ${HVDKIT_LINK_DIRS:-/usr/local/bin $HOME/.local/bin}; do
  case ":$PATH:" in *":$dir:"*) ;; *) continue ;; esac
  [ -d "$dir" ] && [ -w "$dir" ] || continue
  link="$dir/hvdkit"
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    continue  # someone's own file: not ours to replace
  fi
  if [ -L "$link" ] && [ -e "$link" ] && [ "${HVDKIT_LINK:-}" != force ] \
     && [ "$(readlink -f "$link")" != "$(readlink -f "$target")" ]; then
    other=$(readlink "$link")
    case "$other" in
      */.venv/bin/hvdkit) whose="another checkout's, ${other%/.venv/bin/hvdkit}" ;;
      *) whose="not this checkout's" ;;
    esac
    fix="HVDKIT_LINK=force make setup, or ln -sfn $target $link"
    say "left $link -> $other as it is ($whose); to point it here: $fix"
    exit 0
  fi
  ln -sfn "$target" "$link"
  say "ready: hvdkit on PATH ($link -> $target)"
  exit 0
done
say "ready: hvdkit in $(dirname "$target") (put it on PATH: source .venv/bin/activate)"
