# Sourced by infra/*/install.sh: `apt_install PACKAGE` installs one Debian package
# without recommends and without starting its service (a container or CI has no init
# system; the tests start their own server), cleaning up after itself.
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d 101: the package's postinst must not try to start its own service.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
  fi
  local status=0
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$1" > /dev/null; } || status=$?
  if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi
  return "$status"
}
