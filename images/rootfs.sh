#!/usr/bin/env bash
# Assembles the root filesystem of one Ferry image from built binaries and this machine's
# (Debian's) C library: the binaries, exactly the shared libraries they load, a minimal /etc
# and, for the proxy, iptables (nft and legacy backends) for the init step. No shell, no
# package manager. Used by scripts/build-images.sh and by each images/*/Containerfile, so
# both build the same tree.
#
#   images/rootfs.sh IMAGE ROOTFS BINDIR     IMAGE: proxy | control | demo
set -euo pipefail

image=${1:?usage: rootfs.sh proxy|control|demo ROOTFS BINDIR}
root=${2:?rootfs directory}
bindir=${3:?directory of the built binaries}

case "$image" in
  proxy) bins=(ferry-proxy) ;;
  control) bins=(ferry-control) ;;
  demo) bins=(ferry-emojivoto) ;;
  *) echo "rootfs.sh: unknown image $image" >&2; exit 2 ;;
esac

rm -rf "$root"
mkdir -p "$root"/{etc,run,tmp,usr/bin,usr/sbin,usr/lib,usr/lib64,usr/local/bin}
chmod 1777 "$root/tmp"
# Merged /usr, as on Debian: the paths binaries and ld.so look in resolve either way.
ln -s usr/bin "$root/bin"
ln -s usr/sbin "$root/sbin"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"

# Copies a file (following links) to the directory it really lives in on this machine.
add() {
  local src=$1 dir
  dir=$(realpath "$(dirname "$src")")
  mkdir -p "$root$dir"
  cp -L --preserve=mode "$src" "$root$dir/$(basename "$src")"
}

# Copies a file's shared libraries (as ldd resolves them here) and the dynamic loader,
# and keeps the names ldd used (e.g. /lib64/ld-linux-x86-64.so.2).
add_libs() {
  local lib
  while read -r lib; do
    [ -e "$root$lib" ] || add "$lib"
  done < <(ldd "$1" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }')
}

for bin in "${bins[@]}"; do
  install -m 0755 "$bindir/$bin" "$root/usr/local/bin/$bin"
  add_libs "$bindir/$bin"
done

if [ "$image" = proxy ]; then
  # The init step runs iptables-nft, iptables-legacy or iptables (crates/proxy/src/init.rs).
  for multi in xtables-nft-multi xtables-legacy-multi; do
    add "/usr/sbin/$multi"
    add_libs "/usr/sbin/$multi"
  done
  for cmd in iptables ip6tables; do
    for suffix in "" -save -restore; do
      ln -s xtables-nft-multi "$root/usr/sbin/$cmd-nft$suffix"
      ln -s xtables-legacy-multi "$root/usr/sbin/$cmd-legacy$suffix"
      ln -s xtables-nft-multi "$root/usr/sbin/$cmd$suffix"
    done
  done
  # Matches and targets are loaded with dlopen, so ldd does not list them.
  xt=$(dirname "$(realpath "$(ldd /usr/sbin/xtables-nft-multi | awk '/libxtables/ { print $3 }')")")/xtables
  for ext in "$xt"/libxt_*.so "$xt"/libipt_*.so "$xt"/libip6t_*.so; do
    add "$ext"
    add_libs "$ext"
  done
fi

if [ "$image" = control ]; then
  # The trusted roots of https jwksURIs (docs/authorization.md): Debian's ca-certificates
  # bundle, where rustls-native-certs looks first.
  bundle=/etc/ssl/certs/ca-certificates.crt
  [ -s "$bundle" ] || { echo "rootfs.sh: $bundle is missing (install ca-certificates)" >&2; exit 1; }
  add "$bundle"
fi

cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/:/sbin/nologin
ferry-proxy:x:2102:2102:ferry-proxy:/:/sbin/nologin
ferry-control:x:2103:2103:ferry-control:/:/sbin/nologin
nonroot:x:65532:65532:nonroot:/:/sbin/nologin
nobody:x:65534:65534:nobody:/:/sbin/nologin
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
ferry-proxy:x:2102:
ferry-control:x:2103:
nonroot:x:65532:
nogroup:x:65534:
GROUP
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
# Overwritten by the kubelet's mounts in a pod; present so the binaries run anywhere.
printf '127.0.0.1 localhost\n::1 localhost\n' > "$root/etc/hosts"
: > "$root/etc/resolv.conf"
