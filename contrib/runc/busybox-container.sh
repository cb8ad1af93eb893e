#!/bin/sh
# Run SCRIPT in a throwaway runc container (busybox, uid 1000, read-only root) that gets
# unit UNIT's metadata at /meta through the metafs OCI hook (contrib/oci/).
# Usage: busybox-container.sh UNIT ANCHORS_DIR SCRIPT
# Needs root, runc and busybox-static; `metafs` on PATH (or $METAFS).
set -eu
[ $# -eq 3 ] || { echo "usage: $0 UNIT ANCHORS_DIR SCRIPT" >&2; exit 2; }
unit=$1 anchors=$(realpath "$2") script=$3
metafs=$(command -v "${METAFS:-metafs}") || { echo "$0: metafs is not on PATH" >&2; exit 1; }
bundle=$(mktemp -d /tmp/metafs-bundle.XXXXXX)
id=metafs-$(basename "$bundle" | cut -d. -f2 | tr 'A-Z' 'a-z')
trap 'runc delete --force "$id" >/dev/null 2>&1; rm -rf "$bundle"' EXIT INT TERM
mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/etc" "$bundle/rootfs/tmp"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do [ "$applet" = busybox ] || ln -s busybox "$bundle/rootfs/bin/$applet"; done
echo 'app:x:1000:1000::/tmp:/bin/sh' > "$bundle/rootfs/etc/passwd"
(cd "$bundle" && runc spec)
python3 - "$bundle/config.json" "$unit" "$anchors" "$metafs" "$script" <<'PY'
import json, sys
path, unit, anchors, metafs, script = sys.argv[1:]
c = json.load(open(path))
c["process"].update(terminal=False, args=["/bin/sh", "-c", script], user={"uid": 1000, "gid": 1000}, cwd="/tmp")
c["root"] = {"path": "rootfs", "readonly": True}
c["annotations"] = {"io.metafs.unit": unit}
c["hooks"] = {"createRuntime": [{"path": metafs, "args": ["metafs", "oci-hook", "--anchors", anchors], "timeout": 10}]}
json.dump(c, open(path, "w"), indent=2)
PY
runc run --bundle "$bundle" "$id"
