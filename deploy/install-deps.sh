#!/bin/sh
# install-deps.sh PKG...: install the Debian packages that are missing.
# Used by `make run` and `make test`, so a fresh machine needs nothing else.
set -eu
missing=""
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
	    missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "senderwatch: missing Debian packages:$missing" >&2
	echo "senderwatch: run as root, or: sudo apt-get install$missing" >&2
	exit 1
fi
echo "senderwatch: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Installing exim4 or redis-server must not start system services here.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' > "$policy"
	chmod 755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi
apt-get install -y -qq --no-install-recommends $missing
