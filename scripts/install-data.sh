#!/usr/bin/env bash
# Installs Debian's packaged Fashion-MNIST when we are root on a Debian-like system.
# Elsewhere attnvision downloads it (MD5-checked) or reads --data-dir / $ATTNVISION_DATA.
set -u
dir=/usr/share/datasets/fashion-mnist
[ -f "$dir/train-images-idx3-ubyte.gz" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
   { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }) ||
    echo "note: could not install dataset-fashion-mnist with apt; attnvision will download Fashion-MNIST instead"
else
  echo "note: not root or no apt; attnvision will download Fashion-MNIST on first use (or set ATTNVISION_DATA)"
fi
exit 0
