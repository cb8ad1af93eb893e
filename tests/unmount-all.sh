#!/usr/bin/env bash
# Last-resort cleanup of FUSE mounts left by tests: abort each connection (so that no
# process stays stuck on a hung daemon), then detach the mount. With an argument, only
# mounts at or below that path; without one, every fuse.metafs mount.
set -u
prefix=${1:-}
fusectl_was_mounted=1
if ! mountpoint -q /sys/fs/fuse/connections; then
  fusectl_was_mounted=0
  mount -t fusectl none /sys/fs/fuse/connections 2>/dev/null
fi
while read -r _ _ devno _ target _ _ _ fstype _; do
  [ "$fstype" = "fuse.metafs" ] || continue
  if [ -n "$prefix" ]; then case "$target" in "$prefix"|"$prefix"/*) ;; *) continue ;; esac; fi
  minor=${devno#*:}
  [ -w "/sys/fs/fuse/connections/$minor/abort" ] && echo 1 > "/sys/fs/fuse/connections/$minor/abort"
  fusermount3 -uz "$target" 2>/dev/null || umount -l "$target" 2>/dev/null
  echo "unmount-all: detached $target" >&2
done < <(sed 's/ - / /' /proc/self/mountinfo)
[ "$fusectl_was_mounted" = 1 ] || umount /sys/fs/fuse/connections 2>/dev/null
exit 0
