# Shared helpers for the container-image scripts (sourced, not run).
# Everything here is local: no registry is contacted; images are made from
# files on this machine (docker import of a debootstrapped root file system).

# The docker client that matches Debian's dockerd (docker.io); another one
# can be chosen with SIXBED4_DOCKER_CLI (the API version is negotiated).
if [[ -n "${SIXBED4_DOCKER_CLI:-}" ]]; then DOCKER="$SIXBED4_DOCKER_CLI"
elif [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker
else DOCKER=docker; fi
# The classic builder: it is in every docker.io and needs no buildx plugin.
export DOCKER_BUILDKIT=0

# Where downloaded root file systems are kept between runs (outside the clone).
SIXBED4_DOCKER_CACHE="${SIXBED4_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sixbed4/docker}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Installs Debian packages that are missing (one apt-get update first).
apt_ensure() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ $(id -u) -eq 0 ]] || die "needs root to install ${missing[*]}"
  log "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=120 "${missing[@]}" >&2
}

image_exists() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }
image_label() { "$DOCKER" image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }
